//! Audit events and alerts: what the controller and operators did, with the numbers that
//! decided it. The store appends events to a hash chain; alerts go to webhooks.

use serde::{Deserialize, Serialize};

/// A value attached to an event or alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detail {
    Bool(bool),
    Num(f64),
    Text(String),
}

impl From<f64> for Detail {
    fn from(v: f64) -> Self {
        Detail::Num(v)
    }
}

impl From<u64> for Detail {
    fn from(v: u64) -> Self {
        Detail::Num(v as f64)
    }
}

impl From<bool> for Detail {
    fn from(v: bool) -> Self {
        Detail::Bool(v)
    }
}

impl From<&str> for Detail {
    fn from(v: &str) -> Self {
        Detail::Text(v.to_string())
    }
}

impl From<String> for Detail {
    fn from(v: String) -> Self {
        Detail::Text(v)
    }
}

/// Named values, in a stable order.
pub type Details = Vec<(String, Detail)>;

/// One transition of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub rollout: String,
    pub ts_ms: i64,
    /// `created`, `started`, `step_advanced`, `gate_passed`, `gate_failed`, `gate_held`,
    /// `awaiting_approval`, `approved`, `paused`, `resumed`, `promoted`, `rolled_back`,
    /// `aborted`, `completed`, `switched`, `validated`, `retired`, `srm_detected`, …
    pub kind: String,
    /// `controller`, or the operator (`admin`, `cli`).
    pub actor: String,
    pub message: String,
    pub details: Details,
}

/// Alert severity, P0 (critical) to P3 (info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    P0,
    P1,
    P2,
    P3,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P0 => "P0",
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_uppercase().as_str() {
            "P0" => Some(Severity::P0),
            "P1" => Some(Severity::P1),
            "P2" => Some(Severity::P2),
            "P3" => Some(Severity::P3),
            _ => None,
        }
    }
}

/// Something an operator should know about now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rollout: String,
    pub severity: Severity,
    /// Machine-readable kind: `rollback`, `stuck_step`, `srm`, `switch_done`, `completed`, …
    pub kind: String,
    pub title: String,
    pub ts_ms: i64,
    pub details: Details,
}
