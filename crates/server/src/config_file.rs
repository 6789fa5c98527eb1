//! Reading the gateway's YAML configuration file.

use std::path::Path;

use switchyard_core::config::{BackendSpec, GatewayConfig, RawConfig};

/// Why a configuration file was refused: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<String>,
}

/// Parses and validates YAML text; relative ONNX paths are resolved against `base`.
pub fn parse_config(text: &str, base: &Path, origin: &str) -> Result<GatewayConfig, ConfigError> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError {
        path: origin.to_string(),
        problems: vec![e.to_string()],
    })?;
    let mut config = raw.validate().map_err(|problems| ConfigError {
        path: origin.to_string(),
        problems,
    })?;
    let mut missing = Vec::new();
    for (model, m) in config.models.iter_mut() {
        for (version, backend) in m.versions.iter_mut() {
            if let BackendSpec::Onnx { path } = backend {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
                if !path.is_file() {
                    missing.push(format!(
                        "models.{model}.versions.{version}.onnx: no file at {}",
                        path.display()
                    ));
                }
            }
        }
    }
    if let Some(dir) = &config.data_dir {
        if dir.is_relative() {
            config.data_dir = Some(base.join(dir));
        }
    }
    if missing.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            path: origin.to_string(),
            problems: missing,
        })
    }
}

/// Reads, parses and validates a configuration file.
pub fn load_config(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: origin.clone(),
        problems: vec![format!("cannot read: {e}")],
    })?;
    let base = path
        .parent()
        .map_or_else(|| Path::new(".").to_path_buf(), Path::to_path_buf);
    parse_config(&text, &base, &origin)
}
