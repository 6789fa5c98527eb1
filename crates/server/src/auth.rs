//! Who is calling, and what they may do.
//!
//! Credentials are named and hold roles (`switchyard_core::access`); the configuration keeps
//! the SHA-256 of each bearer token, never the token. A presented token is hashed and compared
//! with every credential's hash in constant time. [`ADMIN_ROUTES`] is the one table of which
//! role each admin route needs; `/v1/feedback` needs `feedback` and, when
//! `auth.data_plane.require` is on, inference needs `inference`.
//!
//! With no credential at all the gateway is in **open mode** (the demo): every caller may do
//! everything, and the audit trail's actor is whatever `x-switchyard-actor` says. With
//! credentials, the actor is always the credential's name and that header is ignored.

use std::path::Path;

use axum::http::{header, HeaderMap, Method, StatusCode};

use crate::http_util::{header_str, Headers};
use sha2::{Digest, Sha256};
use switchyard_core::access::{allows, AccessRole};
use switchyard_core::config::{is_sha256_hex, AuthConfig, TokenHash, ADMIN_TOKEN_CREDENTIAL};

use crate::error::ApiError;

/// Which role each admin route (under `/admin/v1`) needs. A `{…}` segment matches any one
/// segment; a route missing here needs `admin`.
pub const ADMIN_ROUTES: &[(&str, &str, AccessRole)] = &[
    ("GET", "/routes", AccessRole::Viewer),
    ("PUT", "/routes/{model}", AccessRole::Admin),
    ("GET", "/models/{model}/stats", AccessRole::Viewer),
    ("GET", "/rollouts", AccessRole::Viewer),
    ("POST", "/rollouts", AccessRole::Operator),
    ("GET", "/rollouts/{name}", AccessRole::Viewer),
    ("GET", "/rollouts/{name}/events", AccessRole::Viewer),
    ("GET", "/rollouts/{name}/report", AccessRole::Viewer),
    ("GET", "/rollouts/{name}/history", AccessRole::Viewer),
    ("POST", "/rollouts/{name}/pause", AccessRole::Operator),
    ("POST", "/rollouts/{name}/resume", AccessRole::Operator),
    ("POST", "/rollouts/{name}/rollback", AccessRole::Operator),
    ("POST", "/rollouts/{name}/abort", AccessRole::Operator),
    ("POST", "/rollouts/{name}/approve", AccessRole::Approver),
    ("POST", "/rollouts/{name}/promote", AccessRole::Approver),
    ("GET", "/audit/verify", AccessRole::Viewer),
    ("GET", "/cluster", AccessRole::Viewer),
    ("POST", "/replay", AccessRole::Admin),
];

/// The role an admin call needs (`path` relative to `/admin/v1`).
pub fn admin_route_role(method: &Method, path: &str) -> AccessRole {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    ADMIN_ROUTES
        .iter()
        .find(|(m, pattern, _)| {
            let wanted: Vec<&str> = pattern.trim_matches('/').split('/').collect();
            *m == method.as_str()
                && wanted.len() == segments.len()
                && wanted
                    .iter()
                    .zip(&segments)
                    .all(|(w, s)| (w.starts_with('{') && !s.is_empty()) || w == s)
        })
        .map_or(AccessRole::Admin, |(_, _, role)| *role)
}

/// Compares in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The SHA-256 of `data` (a token, as the configuration writes it; a model file's bytes) as 64
/// lowercase hex digits.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    Sha256::digest(data.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
    out
}

/// A credential as the gateway holds it: its name, roles and token hash.
#[derive(Clone)]
pub struct Credential {
    pub name: String,
    pub roles: Vec<AccessRole>,
    /// With `feedback`: the only models whose requests it may label.
    pub models: Option<Vec<String>>,
    hash: [u8; 32],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// Why the credentials could not be read at start.
#[derive(Debug, thiserror::Error)]
#[error("auth.credentials[{index}] ('{name}'): {reason}")]
pub struct AuthError {
    pub index: usize,
    pub name: String,
    pub reason: String,
}

/// The gateway's credentials and its data plane's access.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    credentials: Vec<Credential>,
    data_plane_require: bool,
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Open mode: nobody is authenticated.
    Open,
    /// A named credential.
    Named {
        name: String,
        roles: Vec<AccessRole>,
        models: Option<Vec<String>>,
    },
}

impl Caller {
    /// The actor the audit trail records: the credential's name; in open mode `admin`, or
    /// `admin:<x-switchyard-actor>` (free text, as unauthenticated as everything else then).
    pub fn actor(&self, headers: &HeaderMap) -> String {
        match self {
            Caller::Named { name, .. } => name.clone(),
            Caller::Open => headers
                .get("x-switchyard-actor")
                .and_then(|v| v.to_str().ok())
                .filter(|a| !a.is_empty() && a.len() <= 64)
                .map_or_else(|| "admin".to_string(), |a| format!("admin:{a}")),
        }
    }

    /// The models whose requests this caller may label (`None`: any).
    pub fn feedback_models(&self) -> Option<Vec<String>> {
        match self {
            Caller::Open => None,
            Caller::Named { roles, .. } if roles.contains(&AccessRole::Admin) => None,
            Caller::Named { models, .. } => models.clone(),
        }
    }
}

impl Auth {
    /// Open mode: no credentials.
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Reads the credentials' hashes (from the file, the environment or a file) and adds the
    /// legacy `admin_token` (already read from `admin_token_env`) as the `admin` credential.
    pub fn load(config: &AuthConfig, admin_token: Option<&str>) -> Result<Auth, AuthError> {
        let mut credentials = Vec::new();
        if let Some(token) = admin_token {
            credentials.push(Credential {
                name: ADMIN_TOKEN_CREDENTIAL.to_string(),
                roles: vec![AccessRole::Admin],
                models: None,
                hash: sha256(token),
            });
        }
        for (index, c) in config.credentials.iter().enumerate() {
            let refuse = |reason: String| AuthError {
                index,
                name: c.name.clone(),
                reason,
            };
            let hex = match &c.token_sha256 {
                TokenHash::Hex(hex) => hex.clone(),
                TokenHash::Env(var) => std::env::var(var).map_err(|_| {
                    refuse(format!(
                        "token_sha256_env names {var}, which is not set in the environment"
                    ))
                })?,
                TokenHash::File(path) => read_hash_file(path).map_err(refuse)?,
            };
            let hash = parse_hex(hex.trim()).ok_or_else(|| {
                refuse(
                    "the token hash must be 64 hex digits (the SHA-256 of the token, as \
                     `switchyard token hash` prints it), never the token"
                        .to_string(),
                )
            })?;
            credentials.push(Credential {
                name: c.name.clone(),
                roles: c.roles.clone(),
                models: c.models.clone(),
                hash,
            });
        }
        Ok(Auth {
            credentials,
            data_plane_require: config.data_plane_require,
        })
    }

    /// No credential: anyone may do anything.
    pub fn is_open(&self) -> bool {
        self.credentials.is_empty()
    }

    /// Inference needs a credential with the `inference` role.
    pub fn data_plane_required(&self) -> bool {
        self.data_plane_require && !self.is_open()
    }

    /// The credentials' names and roles (never their hashes).
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &[AccessRole])> {
        self.credentials
            .iter()
            .map(|c| (c.name.as_str(), c.roles.as_slice()))
    }

    /// One line on who may do what, for the start-up log.
    pub fn describe(&self) -> String {
        if self.is_open() {
            return "OPEN MODE: no credentials are configured, so the admin API, /v1/feedback \
                    and inference accept any caller (fine for the demo; configure \
                    auth.credentials or admin_token_env anywhere else)"
                .to_string();
        }
        let names: Vec<String> = self
            .credentials
            .iter()
            .map(|c| {
                let roles: Vec<&str> = c.roles.iter().map(|r| r.as_str()).collect();
                format!("{} ({})", c.name, roles.join(", "))
            })
            .collect();
        format!(
            "{} credential(s): {}; inference {}",
            names.len(),
            names.join(", "),
            if self.data_plane_require {
                "needs the inference role"
            } else {
                "is open (auth.data_plane.require is off)"
            }
        )
    }

    /// The credential whose token the request presents.
    fn authenticate(&self, headers: &dyn Headers) -> Option<&Credential> {
        let presented = headers
            .first(&header::AUTHORIZATION)
            .and_then(header_str)
            .and_then(|v| v.strip_prefix("Bearer "))?;
        let digest = sha256(presented.trim());
        // Every credential is compared, whichever matches.
        let mut found = None;
        for c in &self.credentials {
            if constant_time_eq(&digest, &c.hash) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }

    /// The caller, if it may do what needs `needed` (`what` names it in a refusal): 401
    /// without a known token, 403 naming the missing role. Open mode lets everyone through.
    pub fn check(
        &self,
        headers: &dyn Headers,
        needed: AccessRole,
        what: &str,
    ) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller::Open);
        }
        let Some(c) = self.authenticate(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("{what} needs a bearer token (Authorization: Bearer <token>) of a credential with role `{needed}`; none or an unknown one was presented"),
            ));
        };
        if !allows(&c.roles, needed) {
            let held: Vec<&str> = c.roles.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "credential '{}' may not {what}: it needs role `{needed}` (holds {})",
                    c.name,
                    held.join(", ")
                ),
            ));
        }
        Ok(Caller::Named {
            name: c.name.clone(),
            roles: c.roles.clone(),
            models: c.models.clone(),
        })
    }
}

fn read_hash_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("token_sha256_file: cannot read {}: {e}", path.display()))
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if !is_sha256_hex(text) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::config::CredentialConfig;

    #[test]
    fn every_admin_route_has_its_role_and_the_rest_needs_admin() {
        let role = |m: Method, p: &str| admin_route_role(&m, p);
        assert_eq!(role(Method::GET, "/rollouts"), AccessRole::Viewer);
        assert_eq!(role(Method::GET, "/rollouts/"), AccessRole::Viewer);
        assert_eq!(role(Method::POST, "/rollouts"), AccessRole::Operator);
        assert_eq!(role(Method::GET, "/rollouts/x"), AccessRole::Viewer);
        assert_eq!(
            role(Method::POST, "/rollouts/x/approve"),
            AccessRole::Approver
        );
        assert_eq!(
            role(Method::POST, "/rollouts/x/promote"),
            AccessRole::Approver
        );
        assert_eq!(
            role(Method::POST, "/rollouts/x/rollback"),
            AccessRole::Operator
        );
        assert_eq!(role(Method::PUT, "/routes/m"), AccessRole::Admin);
        assert_eq!(role(Method::POST, "/rollouts/x/bogus"), AccessRole::Admin);
        assert_eq!(role(Method::DELETE, "/rollouts/x"), AccessRole::Admin);
        assert_eq!(role(Method::GET, "/models//stats"), AccessRole::Admin);
    }

    #[test]
    fn hashes_are_sha256_hex_and_parse_back() {
        // `printf %s abc | sha256sum`
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex("abc"), abc);
        assert_eq!(parse_hex(abc), Some(sha256("abc")));
        assert_eq!(parse_hex(&abc.to_uppercase()), Some(sha256("abc")));
        assert_eq!(parse_hex("abc"), None);
    }

    #[test]
    fn a_token_maps_to_its_credential_and_roles_decide() {
        let config = AuthConfig {
            credentials: vec![CredentialConfig {
                name: "alice".into(),
                roles: vec![AccessRole::Approver],
                token_sha256: TokenHash::Hex(sha256_hex("alice-token")),
                models: None,
            }],
            data_plane_require: false,
        };
        let auth = Auth::load(&config, Some("root-token")).unwrap();
        let with = |token: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            h.insert("x-switchyard-actor", "mallory".parse().unwrap());
            h
        };
        let alice = auth
            .check(&with("alice-token"), AccessRole::Approver, "approve")
            .unwrap();
        assert_eq!(alice.actor(&with("alice-token")), "alice");
        let refused = auth
            .check(&with("alice-token"), AccessRole::Operator, "pause")
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(
            refused.message.contains("needs role `operator`"),
            "{}",
            refused.message
        );
        let unknown = auth
            .check(&with("nope"), AccessRole::Viewer, "read")
            .unwrap_err();
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        let admin = auth
            .check(&with("root-token"), AccessRole::Feedback, "label")
            .unwrap();
        assert_eq!(admin.actor(&HeaderMap::new()), "admin");
        assert_eq!(admin.feedback_models(), None);
        // Open mode: anyone, and the actor header is free text.
        let open = Auth::open()
            .check(&HeaderMap::new(), AccessRole::Admin, "anything")
            .unwrap();
        assert_eq!(open.actor(&with("x")), "admin:mallory");
        assert_eq!(open.actor(&HeaderMap::new()), "admin");
    }
}
