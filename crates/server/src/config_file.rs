//! Reading the gateway's YAML configuration file.

use std::path::Path;

use switchyard_core::config::{BackendSpec, GatewayConfig, RawConfig, TokenHash};

use crate::tls::resolve;

/// Why a configuration file was refused: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<String>,
}

/// Deserializes YAML (or JSON, a subset) and lists every field the target type does not know,
/// instead of stopping at the first one.
pub fn from_yaml_listing_unknown<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<(T, Vec<String>), String> {
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(serde_yaml::Deserializer::from_str(text), |path| {
        // serde_ignored marks `Some` as `?`; operators wrote no such level.
        unknown.push(format!(
            "{}: unknown field",
            path.to_string().replace(".?", "").replace("?.", "")
        ));
    })
    .map_err(|e| e.to_string())?;
    Ok((value, unknown))
}

/// Parses and validates YAML text; relative paths (ONNX models, token hash files, TLS
/// certificates, keys and CA files) are resolved against `base`, and the files that must exist
/// are read and checked (a TLS problem names the field, the file and what is wrong).
pub fn parse_config(text: &str, base: &Path, origin: &str) -> Result<GatewayConfig, ConfigError> {
    let refuse = |problems| ConfigError {
        path: origin.to_string(),
        problems,
    };
    let (raw, unknown): (RawConfig, Vec<String>) =
        from_yaml_listing_unknown(text).map_err(|e| refuse(vec![e]))?;
    let mut config = match raw.validate() {
        Ok(config) if unknown.is_empty() => config,
        Ok(_) => return Err(refuse(unknown)),
        Err(problems) => return Err(refuse(unknown.into_iter().chain(problems).collect())),
    };
    let mut missing = Vec::new();
    for (model, m) in config.models.iter_mut() {
        for (version, backend) in m.versions.iter_mut() {
            match backend {
                BackendSpec::Onnx { path } => {
                    resolve(path, base);
                    if !path.is_file() {
                        missing.push(format!(
                            "models.{model}.versions.{version}.onnx: no file at {}",
                            path.display()
                        ));
                    }
                }
                BackendSpec::Http {
                    ca_file: Some(path),
                    ..
                } => {
                    resolve(path, base);
                    if let Some(e) = crate::tls::ca_file_problem(path) {
                        missing.push(format!("models.{model}.versions.{version}.ca_file: {e}"));
                    }
                }
                BackendSpec::Http { .. } => {}
            }
        }
    }
    if let Some(tls) = &mut config.tls {
        resolve(&mut tls.cert, base);
        resolve(&mut tls.key, base);
        missing.extend(crate::tls::listener_problems(tls));
    }
    for (i, w) in config.webhooks.iter_mut().enumerate() {
        if let Some(path) = &mut w.ca_file {
            resolve(path, base);
            if let Some(e) = crate::tls::ca_file_problem(path) {
                missing.push(format!("alerts.webhooks[{i}].ca_file: {e}"));
            }
        }
    }
    for c in config.auth.credentials.iter_mut() {
        if let TokenHash::File(path) = &mut c.token_sha256 {
            resolve(path, base);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_listed_with_every_other_problem() {
        let yaml = r#"
listen: nowhere
lgo: { batch_size: 5 }
models:
  m:
    versions: { v1: { url: "http://127.0.0.1:1", timout_ms: 5 } }
    serve: { kind: single, version: v9, extra: true }
"#;
        let err = parse_config(yaml, Path::new("."), "test").unwrap_err();
        for expected in [
            "lgo: unknown field",
            "models.m.versions.v1.timout_ms: unknown field",
            "models.m.serve.extra: unknown field",
            "listen: 'nowhere'",
            "unknown version 'v9'",
        ] {
            assert!(
                err.problems.iter().any(|p| p.contains(expected)),
                "missing '{expected}' in {:#?}",
                err.problems
            );
        }
    }
}
