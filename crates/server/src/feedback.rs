//! `POST /v1/feedback`: ground truth and business metrics, late and in any order.
//!
//! The body is one JSON object, a JSON array of objects, or JSON lines. Each item is
//! `{"request_id": "...", "label": <scalar or array> | "value": <number or array>,
//! "metrics": {"name": number}}`. Valid items are stored even when others are not; the answer
//! lists what was accepted, duplicated (idempotent: the first feedback stays), unknown, and
//! invalid with the reason.
//!
//! Labels move the gates, so unless the gateway is in open mode the call needs a credential
//! with the `feedback` role; one limited to some models has the others' requests answered as
//! `forbidden` (nothing of them is stored).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use switchyard_core::access::AccessRole;
use switchyard_core::{Feedback, Truth};

use crate::error::ApiError;
use crate::http_util::read_body;
use crate::protocol::label_of;
use crate::runtime::now_ms;
use crate::state::AppState;

/// Most items accepted in one call.
pub const MAX_ITEMS: usize = 10_000;

fn parse_items(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(item @ Value::Object(_)) => Ok(vec![item]),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_feedback",
            "feedback must be an object, an array of objects, or JSON lines",
        )),
        Err(whole) => {
            // JSON lines.
            let text = std::str::from_utf8(bytes).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "feedback is not UTF-8",
                )
            })?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() < 2 {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("feedback is not valid JSON: {whole}"),
                ));
            }
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l).map_err(|e| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_json",
                            format!("line {}: not valid JSON: {e}", i + 1),
                        )
                    })
                })
                .collect()
        }
    }
}

fn finite(v: &Value, what: &str) -> Result<f64, String> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{what} must be a finite number, got {v}")),
    }
}

/// Validates one item.
pub fn parse_item(item: &Value) -> Result<Feedback, String> {
    let obj = item.as_object().ok_or("an item must be a JSON object")?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "request_id" | "label" | "value" | "metrics") {
            return Err(format!(
                "unknown field '{key}' (expected request_id, label, value, metrics)"
            ));
        }
    }
    let request_id = match obj.get("request_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(other) => {
            return Err(format!(
                "request_id must be a non-empty string of at most 128 characters, got {other}"
            ))
        }
        None => return Err("request_id is missing".into()),
    };
    let truth =
        match (obj.get("label"), obj.get("value")) {
            (Some(_), Some(_)) => return Err("give label or value, not both".into()),
            (Some(Value::Array(items)), None) => Truth::Labels(
                items
                    .iter()
                    .map(|v| {
                        label_of(v).ok_or_else(|| format!("label entries must be scalars, got {v}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (Some(v), None) => Truth::Labels(vec![label_of(v)
                .ok_or_else(|| format!("label must be a scalar or an array, got {v}"))?]),
            (None, Some(Value::Array(items))) => Truth::Values(
                items
                    .iter()
                    .map(|v| finite(v, "value"))
                    .collect::<Result<_, _>>()?,
            ),
            (None, Some(v)) => Truth::Values(vec![finite(v, "value")?]),
            (None, None) => Truth::None,
        };
    let metrics = match obj.get("metrics") {
        None => vec![],
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| finite(v, &format!("metrics.{k}")).map(|x| (k.clone(), x)))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("metrics must be an object of numbers, got {other}")),
    };
    if truth == Truth::None && metrics.is_empty() {
        return Err("give a label, a value or metrics".into());
    }
    Ok(Feedback {
        request_id,
        truth,
        metrics,
    })
}

pub async fn post_feedback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = state
        .auth
        .check(&headers, AccessRole::Feedback, "POST /v1/feedback")?;
    let bytes = read_body(body, state.max_body_bytes.max(1 << 20) * 8).await?;
    let items = parse_items(&bytes)?;
    if items.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_feedback",
            "no feedback items",
        ));
    }
    if items.len() > MAX_ITEMS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!("at most {MAX_ITEMS} items per call"),
        ));
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match parse_item(item) {
            Ok(f) => valid.push(f),
            Err(error) => invalid.push(json!({ "index": index, "error": error })),
        }
    }
    let outcome = if valid.is_empty() {
        Default::default()
    } else {
        state
            .log
            .feedback_for(valid, caller.feedback_models(), now_ms())
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("feedback not stored: {e}"),
                )
            })?
    };
    let m = &state.metrics;
    for (reason, n) in [
        ("accepted", outcome.accepted),
        ("duplicate", outcome.duplicates),
        ("unknown", outcome.unknown.len() as u64),
        ("forbidden", outcome.forbidden.len() as u64),
        ("invalid", invalid.len() as u64),
    ] {
        if n > 0 {
            m.feedback
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.into(),
                })
                .inc_by(n);
        }
    }
    let nothing_taken = outcome.accepted + outcome.duplicates == 0 && outcome.unknown.is_empty();
    let status = if nothing_taken && !outcome.forbidden.is_empty() {
        StatusCode::FORBIDDEN
    } else if nothing_taken && !invalid.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "unknown": outcome.unknown,
            "forbidden": outcome.forbidden,
            "invalid": invalid,
        })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_validated_one_by_one() {
        let ok = parse_item(&json!({"request_id": "r1", "label": 1})).unwrap();
        assert_eq!(ok.truth, Truth::Labels(vec!["1".into()]));
        let v =
            parse_item(&json!({"request_id": "r1", "value": [1.5, 2], "metrics": {"revenue": 3}}))
                .unwrap();
        assert_eq!(v.truth, Truth::Values(vec![1.5, 2.0]));
        assert_eq!(v.metrics, vec![("revenue".to_string(), 3.0)]);
        for (bad, why) in [
            (json!({"label": 1}), "request_id is missing"),
            (json!({"request_id": 5, "label": 1}), "request_id must be"),
            (
                json!({"request_id": "r", "label": 1, "value": 2}),
                "not both",
            ),
            (json!({"request_id": "r", "value": "NaN"}), "finite number"),
            (json!({"request_id": "r", "label": {"a": 1}}), "scalar"),
            (json!({"request_id": "r"}), "give a label"),
            (
                json!({"request_id": "r", "label": 1, "extra": 2}),
                "unknown field 'extra'",
            ),
            (
                json!({"request_id": "r", "metrics": {"clicks": "many"}}),
                "metrics.clicks",
            ),
            (json!([1]), "JSON object"),
        ] {
            let err = parse_item(&bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn bodies_may_be_object_array_or_lines() {
        assert_eq!(
            parse_items(br#"{"request_id": "a", "label": 1}"#)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_items(br#"[{"request_id": "a", "label": 1}, {"request_id": "b", "label": 0}]"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_items(
                b"{\"request_id\": \"a\", \"label\": 1}\n\n{\"request_id\": \"b\", \"label\": 0}\n"
            )
            .unwrap()
            .len(),
            2
        );
        assert!(parse_items(b"{\"request_id\": \"a\"}\nnot json\n")
            .unwrap_err()
            .message
            .contains("line 2"));
        assert!(parse_items(b"nope").is_err());
        assert!(parse_items(b"42").is_err());
    }
}
