//! What a model version *is*: its artefact (the SHA-256 of an ONNX file's bytes as loaded, or
//! the model version an HTTP backend reports in its OIP metadata) and the configuration's
//! optional `git_sha` and `registry`; and the rule that a version name never changes what it
//! names. The server computes the artefact at start, the store keeps every (model, version,
//! artefact) it has served and refuses a start whose artefact differs from the one it knows
//! under the same name ([`VersionProvenance::conflict_with`]).

use serde::{Deserialize, Serialize};

/// Hex digits of a SHA-256 shown where a short form is enough (48 bits: a collision between
/// two versions of one model is not a practical concern).
pub const SHORT_SHA_DIGITS: usize = 12;

/// The artefact a version serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Artefact {
    /// The SHA-256 of the ONNX file's bytes as the gateway loaded them (64 lowercase hex
    /// digits).
    Sha256(String),
    /// The model version an HTTP backend reported (`versions` of OIP `GET /v2/models/{m}`).
    BackendVersion(String),
    /// An HTTP backend that reported no version, or did not answer at start.
    Unknown,
}

impl Artefact {
    /// `sha256`, `backend_version` or `unknown`: the store's column.
    pub fn kind(&self) -> &'static str {
        match self {
            Artefact::Sha256(_) => "sha256",
            Artefact::BackendVersion(_) => "backend_version",
            Artefact::Unknown => "unknown",
        }
    }

    /// The hash or the reported version; `None` when unknown.
    pub fn id(&self) -> Option<&str> {
        match self {
            Artefact::Sha256(id) | Artefact::BackendVersion(id) => Some(id),
            Artefact::Unknown => None,
        }
    }

    /// The artefact of a stored `kind` and `id`; `None` for a kind this build does not know
    /// (or a known kind missing its id).
    pub fn from_parts(kind: &str, id: Option<String>) -> Option<Artefact> {
        match (kind, id) {
            ("sha256", Some(id)) => Some(Artefact::Sha256(id)),
            ("backend_version", Some(id)) => Some(Artefact::BackendVersion(id)),
            ("unknown", _) => Some(Artefact::Unknown),
            _ => None,
        }
    }

    /// `sha256:3f2c1ab9e0d4` (the first [`SHORT_SHA_DIGITS`] digits), `backend:7`, or
    /// `unknown`.
    pub fn short(&self) -> String {
        match self {
            Artefact::Sha256(hex) => {
                format!("sha256:{}", hex.get(..SHORT_SHA_DIGITS).unwrap_or(hex))
            }
            Artefact::BackendVersion(v) => format!("backend:{v}"),
            Artefact::Unknown => "unknown".to_string(),
        }
    }

    /// `sha256:<64 hex digits>`, `backend:7`, or `unknown`: what an audit event records.
    pub fn full(&self) -> String {
        match self {
            Artefact::Sha256(hex) => format!("sha256:{hex}"),
            other => other.short(),
        }
    }

    /// The artefact an audit event's text names ([`Artefact::full`] read back).
    pub fn from_full(text: &str) -> Option<Artefact> {
        if let Some(hex) = text.strip_prefix("sha256:") {
            return Some(Artefact::Sha256(hex.to_string()));
        }
        if let Some(v) = text.strip_prefix("backend:") {
            return Some(Artefact::BackendVersion(v.to_string()));
        }
        (text == "unknown").then_some(Artefact::Unknown)
    }

    fn is_known(&self) -> bool {
        !matches!(self, Artefact::Unknown)
    }
}

/// One version of one model as the gateway serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionProvenance {
    pub model: String,
    pub version: String,
    pub artefact: Artefact,
    /// The commit the model was built from, as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sha: Option<String>,
    /// The model registry's reference (`mlflow:yield/7`), as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

impl VersionProvenance {
    /// `sha256:3f2c1ab9e0d4, git 3f2c1ab, registry mlflow:yield/7` (the parts present).
    pub fn describe(&self) -> String {
        let mut parts = vec![self.artefact.short()];
        if let Some(g) = &self.git_sha {
            parts.push(format!("git {g}"));
        }
        if let Some(r) = &self.registry {
            parts.push(format!("registry {r}"));
        }
        parts.join(", ")
    }

    /// Why `self` may not be served under the name `stored` (a row the store keeps for the
    /// same model and version) already holds, or `None` when they agree. An artefact, git SHA
    /// or registry reference known on both sides must be equal; an unknown artefact (a backend
    /// that reported no version) or an absent field agrees with anything.
    pub fn conflict_with(&self, stored: &VersionProvenance) -> Option<String> {
        let mut changed = Vec::new();
        if self.artefact.is_known()
            && stored.artefact.is_known()
            && self.artefact != stored.artefact
        {
            changed.push(format!(
                "its artefact was {} and is now {}",
                stored.artefact.short(),
                self.artefact.short()
            ));
        }
        if let (Some(old), Some(new)) = (&stored.git_sha, &self.git_sha) {
            if old != new {
                changed.push(format!("its git_sha was {old} and is now {new}"));
            }
        }
        if let (Some(old), Some(new)) = (&stored.registry, &self.registry) {
            if old != new {
                changed.push(format!("its registry was {old} and is now {new}"));
            }
        }
        if changed.is_empty() {
            return None;
        }
        Some(format!(
            "model {} version {}: {}; a version name never changes what it serves, so give \
             the new artefact a new version name (models.{}.versions.<new name>) or restore \
             the one the store knows",
            self.model,
            self.version,
            changed.join(", "),
            self.model
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prov(artefact: Artefact, git: Option<&str>, registry: Option<&str>) -> VersionProvenance {
        VersionProvenance {
            model: "yield".into(),
            version: "v2".into(),
            artefact,
            git_sha: git.map(str::to_string),
            registry: registry.map(str::to_string),
        }
    }

    fn sha(c: char) -> Artefact {
        Artefact::Sha256(c.to_string().repeat(64))
    }

    #[test]
    fn an_events_text_reads_back_as_its_artefact() {
        for a in [
            sha('c'),
            Artefact::BackendVersion("7".into()),
            Artefact::Unknown,
        ] {
            assert_eq!(Artefact::from_full(&a.full()).as_ref(), Some(&a));
        }
        assert_eq!(Artefact::from_full("md5:00"), None);
    }

    #[test]
    fn a_changed_artefact_is_named_with_both_short_hashes() {
        let stored = prov(sha('a'), None, None);
        let now = prov(sha('b'), None, None);
        let message = now.conflict_with(&stored).unwrap();
        assert!(message.contains("model yield version v2"), "{message}");
        assert!(
            message.contains("was sha256:aaaaaaaaaaaa and is now sha256:bbbbbbbbbbbb"),
            "{message}"
        );
        assert!(message.contains("new version name"), "{message}");
        assert_eq!(now.conflict_with(&now.clone()), None);
    }

    #[test]
    fn git_sha_and_registry_conflict_only_when_both_sides_name_one() {
        let stored = prov(sha('a'), Some("3f2c1ab"), None);
        assert_eq!(
            prov(sha('a'), None, Some("mlflow:y/7")).conflict_with(&stored),
            None
        );
        let message = prov(sha('a'), Some("9e9e9e9"), None)
            .conflict_with(&stored)
            .unwrap();
        assert!(
            message.contains("git_sha was 3f2c1ab and is now 9e9e9e9"),
            "{message}"
        );
        let stored = prov(sha('a'), None, Some("mlflow:y/7"));
        let message = prov(sha('a'), None, Some("mlflow:y/8"))
            .conflict_with(&stored)
            .unwrap();
        assert!(message.contains("registry was mlflow:y/7"), "{message}");
    }

    #[test]
    fn an_unknown_artefact_agrees_but_a_change_of_kind_does_not() {
        let backend = prov(Artefact::BackendVersion("7".into()), None, None);
        assert_eq!(
            prov(Artefact::Unknown, None, None).conflict_with(&backend),
            None
        );
        assert_eq!(
            backend.conflict_with(&prov(Artefact::Unknown, None, None)),
            None
        );
        let message = backend.conflict_with(&prov(sha('c'), None, None)).unwrap();
        assert!(message.contains("is now backend:7"), "{message}");
    }

    #[test]
    fn artefacts_round_trip_through_their_parts() {
        for a in [
            sha('d'),
            Artefact::BackendVersion("3".into()),
            Artefact::Unknown,
        ] {
            assert_eq!(
                Artefact::from_parts(a.kind(), a.id().map(str::to_string)),
                Some(a.clone())
            );
        }
        assert_eq!(Artefact::from_parts("md5", Some("x".into())), None);
        assert_eq!(sha('e').short(), "sha256:eeeeeeeeeeee");
        let p = prov(sha('f'), Some("3f2c1ab"), Some("mlflow:yield/7"));
        assert_eq!(
            p.describe(),
            "sha256:ffffffffffff, git 3f2c1ab, registry mlflow:yield/7"
        );
    }
}
