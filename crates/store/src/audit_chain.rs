//! The audit chain and the control rows, apart from any database: what the SQLite
//! (`sqlite_control`) and PostgreSQL (`pg_control`) control backends both
//! store and read back. It exists so that the two backends share one definition of the chain
//! (and of the rows) and never depend on each other or on the dispatching
//! `control::ControlStore`.
//!
//! The chain's format is documented with `control`; [`chain`] places new events after
//! the stored head, [`verify_rows`] recomputes a stored chain and names its first break.

use sha2::{Digest, Sha256};
use switchyard_core::audit::{Alert, AuditEvent, Detail, Details, Severity};

use crate::error::corrupt;
use crate::StoreError;

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit event as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The durable state of one rollout. `spec` and `state` are JSON text owned by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    pub name: String,
    pub spec: String,
    pub state: String,
    pub updated_ms: i64,
}

/// Outcome of `ControlStore::verify_chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events read.
    pub events: u64,
    pub ok: bool,
    /// The first sequence number at which the chain breaks: an edited or moved event, or the
    /// first missing one.
    pub first_bad_seq: Option<u64>,
    pub problem: Option<String>,
}

/// One attempt to deliver an alert to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub alert_seq: u64,
    pub url: String,
    /// 1-based.
    pub attempt: u32,
    pub ts_ms: i64,
    /// HTTP status, when the webhook answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
}

/// Details as stored: JSON has no NaN or infinity (serde_json would write `null`, which does
/// not read back as a [`Detail`]), so non-finite numbers are kept as their text.
pub(crate) fn normalize_details(details: &Details) -> Details {
    details
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Detail::Num(x) if !x.is_finite() => Detail::Text(x.to_string()),
                other => other.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}

pub(crate) fn details_to_json(details: &Details) -> Result<String, StoreError> {
    serde_json::to_string(details).map_err(|e| corrupt("details", e))
}

pub(crate) fn details_from_json(text: &str) -> Result<Details, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt("details", e))
}

fn json_str(s: &str) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| corrupt("audit event", e))
}

/// The bytes an event's hash covers, apart from `prev_hash`.
pub(crate) fn canonical(
    seq: u64,
    rollout: &str,
    ts_ms: i64,
    kind: &str,
    actor: &str,
    message: &str,
    details_json: &str,
) -> Result<String, StoreError> {
    Ok(format!(
        "[{seq},{},{ts_ms},{},{},{},{details_json}]",
        json_str(rollout)?,
        json_str(kind)?,
        json_str(actor)?,
        json_str(message)?,
    ))
}

pub(crate) fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// An audit row as read, before its details are parsed.
pub(crate) struct RawEvent {
    pub(crate) seq: i64,
    pub(crate) rollout: String,
    pub(crate) ts_ms: i64,
    pub(crate) kind: String,
    pub(crate) actor: String,
    pub(crate) message: String,
    pub(crate) details: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

impl RawEvent {
    pub(crate) const COLUMNS: &'static str =
        "seq, rollout, ts_ms, kind, actor, message, details, prev_hash, hash";

    pub(crate) fn into_stored(self) -> Result<StoredEvent, StoreError> {
        let seq = u64::try_from(self.seq).map_err(|e| corrupt("audit seq", e))?;
        Ok(StoredEvent {
            seq,
            event: AuditEvent {
                rollout: self.rollout,
                ts_ms: self.ts_ms,
                kind: self.kind,
                actor: self.actor,
                message: self.message,
                details: details_from_json(&self.details)?,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

pub(crate) fn seq_to_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|e| corrupt("audit seq", e))
}

/// Gives `events` their place in the chain after `head` (the last stored event's seq and
/// hash); returns each stored event with its details as stored.
pub(crate) fn chain(
    head: Option<(i64, String)>,
    events: &[AuditEvent],
) -> Result<Vec<(StoredEvent, String)>, StoreError> {
    let (mut seq, mut prev_hash) = match head {
        Some((seq, hash)) => (
            u64::try_from(seq).map_err(|e| corrupt("audit seq", e))?,
            hash,
        ),
        None => (0, GENESIS_HASH.to_string()),
    };
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let details = normalize_details(&event.details);
        let details_json = details_to_json(&details)?;
        let text = canonical(
            seq,
            &event.rollout,
            event.ts_ms,
            &event.kind,
            &event.actor,
            &event.message,
            &details_json,
        )?;
        let hash = chain_hash(&prev_hash, &text);
        out.push((
            StoredEvent {
                seq,
                event: AuditEvent {
                    details,
                    ..event.clone()
                },
                prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            },
            details_json,
        ));
    }
    Ok(out)
}

/// Recomputes the chain over `rows` (in sequence order) and reports the first break: a gap in
/// the sequence (a deleted event), a `prev_hash` that does not match the previous event's hash
/// (deleted or reordered), or a hash that does not match the event's content (edited).
pub(crate) fn verify_rows(
    rows: impl IntoIterator<Item = RawEvent>,
) -> Result<ChainReport, StoreError> {
    let mut events = 0u64;
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH.to_string();
    let mut first_bad: Option<(u64, String)> = None;
    for row in rows {
        events += 1;
        if first_bad.is_some() {
            continue;
        }
        let Ok(seq) = u64::try_from(row.seq) else {
            first_bad = Some((expected_seq, format!("event has invalid seq {}", row.seq)));
            continue;
        };
        if seq != expected_seq {
            let problem = if seq > expected_seq {
                format!(
                    "events {expected_seq}..{} are missing (next stored event is {seq})",
                    seq - 1
                )
            } else {
                format!("event {seq} appears where {expected_seq} was expected")
            };
            first_bad = Some((expected_seq, problem));
            continue;
        }
        if row.prev_hash != prev_hash {
            first_bad = Some((
                seq,
                format!(
                    "event {seq} does not follow event {}: its prev_hash is not that event's hash",
                    seq - 1
                ),
            ));
            continue;
        }
        let text = canonical(
            seq,
            &row.rollout,
            row.ts_ms,
            &row.kind,
            &row.actor,
            &row.message,
            &row.details,
        )?;
        let hash = chain_hash(&prev_hash, &text);
        if hash != row.hash {
            first_bad = Some((
                seq,
                format!("event {seq} was modified: its content does not match its hash"),
            ));
            continue;
        }
        prev_hash = row.hash;
        expected_seq += 1;
    }
    Ok(match first_bad {
        None => ChainReport {
            events,
            ok: true,
            first_bad_seq: None,
            problem: None,
        },
        Some((seq, problem)) => ChainReport {
            events,
            ok: false,
            first_bad_seq: Some(seq),
            problem: Some(problem),
        },
    })
}

/// An alert row as read.
pub(crate) fn alert_from_parts(
    seq: i64,
    rollout: String,
    severity: &str,
    kind: String,
    title: String,
    ts_ms: i64,
    details: &str,
) -> Result<(u64, Alert), StoreError> {
    Ok((
        u64::try_from(seq).map_err(|e| corrupt("alert seq", e))?,
        Alert {
            rollout,
            severity: Severity::parse(severity)
                .ok_or_else(|| corrupt("alert severity", severity))?,
            kind,
            title,
            ts_ms,
            details: details_from_json(details)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn chain_hash_is_sha256_hex() {
        // sha256("\n") with an empty prev hash and empty canonical text.
        assert_eq!(
            chain_hash("", ""),
            "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"
        );
    }

    #[test]
    fn canonical_has_fixed_field_order() {
        let text = canonical(7, "r\"1", -5, "promoted", "cli", "ok", "[[\"p\",0.5]]").unwrap();
        assert_eq!(text, r#"[7,"r\"1",-5,"promoted","cli","ok",[["p",0.5]]]"#);
    }

    #[test]
    fn non_finite_details_are_kept_as_text() {
        let d: Details = vec![
            ("nan".into(), Detail::Num(f64::NAN)),
            ("inf".into(), Detail::Num(f64::INFINITY)),
            ("x".into(), Detail::Num(1.5)),
        ];
        let back = details_from_json(&details_to_json(&normalize_details(&d)).unwrap()).unwrap();
        assert_eq!(
            back,
            vec![
                ("nan".to_string(), Detail::Text("NaN".into())),
                ("inf".to_string(), Detail::Text("inf".into())),
                ("x".to_string(), Detail::Num(1.5)),
            ]
        );
    }
}
