//! External gates' readings: Prometheus queries and webhook checks, run in the background so
//! a slow or dead source never holds a controller tick.
//!
//! After each tick the controller calls [`Readings::schedule`] with the rollout's state: every
//! gate the state machine reads now (`rollout::active_external_gates`) whose last query started
//! `interval_ms` ago or more (controller clock) and is not still running gets a new one, with
//! its `timeout_ms`. The result, stamped with the time the query started, replaces the gate's
//! previous reading; [`Readings::latest`] hands them to `Observations::external`. Whatever is
//! not one clear answer is a [`Reading::NoData`] naming the reason.
//!
//! - Prometheus: `GET {url}/api/v1/query?query=…`, evaluated at Prometheus' own time (the
//!   controller's clock may be scaled or manual; the data is in wall time). An instant vector
//!   of exactly one sample, or a scalar, is a value; anything else is no data.
//! - Webhook: `POST {url}` with the rollout's context as JSON; a 2xx answer `{"pass": bool}` is
//!   a verdict, `{"value": number}` a value; any other answer, status or silence is no data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use parking_lot::Mutex;
use serde_json::{json, Value};
use switchyard_core::rollout::{
    active_external_gates, ExternalGate, ExternalReading, ExternalSource, Reading, RolloutSpec,
    RolloutState,
};

use crate::backend::Clients;
use crate::http_util::error_chain;

/// How much of an answer is read.
const ANSWER_LIMIT: usize = 256 * 1024;
/// How much of an unusable answer is quoted in the reason.
const SNIPPET_CHARS: usize = 200;

/// (rollout, gate).
type Key = (String, String);

/// The latest reading of every gate, and when each gate's last query started.
#[derive(Debug, Default)]
pub(super) struct Readings {
    clients: Clients,
    latest: Mutex<HashMap<String, BTreeMap<String, ExternalReading>>>,
    /// Start of each gate's last query, and whether it is still running.
    queries: Mutex<HashMap<Key, (i64, bool)>>,
}

impl Readings {
    /// The latest reading of each gate of `rollout`.
    pub(super) fn latest(&self, rollout: &str) -> BTreeMap<String, ExternalReading> {
        self.latest.lock().get(rollout).cloned().unwrap_or_default()
    }

    /// Drops a finished rollout's readings.
    pub(super) fn forget(&self, rollout: &str) {
        self.latest.lock().remove(rollout);
        self.queries.lock().retain(|(r, _), _| r != rollout);
    }

    /// Starts the queries that are due for a rollout in `state` at `now`; forgets a finished
    /// rollout's readings.
    pub(super) fn schedule(self: &Arc<Self>, spec: &RolloutSpec, state: &RolloutState, now: i64) {
        if state.phase.is_terminal() {
            self.forget(&spec.name);
            return;
        }
        for gate in active_external_gates(spec, state) {
            let key = (spec.name.clone(), gate.name.clone());
            {
                let mut queries = self.queries.lock();
                let due = match queries.get(&key) {
                    None => true,
                    Some(&(_, true)) => false,
                    Some(&(started, false)) => {
                        now.saturating_sub(started)
                            >= i64::try_from(gate.interval_ms).unwrap_or(i64::MAX)
                    }
                };
                if !due {
                    continue;
                }
                queries.insert(key.clone(), (now, true));
            }
            let context = context(spec, state, gate, now);
            let me = self.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let reading = read(&me.clients, &gate, context).await;
                if let Reading::NoData { reason } = &reading {
                    tracing::debug!(rollout = %key.0, gate = %key.1, "external gate gave no data: {reason}");
                }
                // A rollout that ended meanwhile was forgotten (and a new one of the same name
                // started its own queries): this reading is dropped.
                let mut queries = me.queries.lock();
                if let Some(q) = queries.get_mut(&key).filter(|q| q.0 == now && q.1) {
                    q.1 = false;
                    me.latest.lock().entry(key.0.clone()).or_default().insert(
                        key.1.clone(),
                        ExternalReading {
                            at_ms: now,
                            reading,
                        },
                    );
                }
            });
        }
    }
}

/// What a webhook check is told about the rollout.
fn context(spec: &RolloutSpec, state: &RolloutState, gate: &ExternalGate, now: i64) -> Value {
    let (current, candidate) = spec.versions();
    json!({
        "rollout": spec.name,
        "model": spec.model,
        "kind": spec.kind_name(),
        "phase": state.phase.as_str(),
        "step": state.step + 1,
        "current": current,
        "candidate": candidate,
        "gate": gate.name,
        "ts_ms": now,
    })
}

/// One reading of `gate`, within its timeout.
pub(super) async fn read(clients: &Clients, gate: &ExternalGate, context: Value) -> Reading {
    let timeout = Duration::from_millis(gate.timeout_ms);
    let (url, request) = match &gate.source {
        ExternalSource::Prometheus { url, query } => {
            let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
            let url = format!("{}/api/v1/query?query={encoded}", url.trim_end_matches('/'));
            let request = Request::builder()
                .method(Method::GET)
                .uri(url.as_str())
                .header(hyper::header::USER_AGENT, "switchyard")
                .body(Full::default());
            (url, request)
        }
        ExternalSource::Webhook { url } => {
            let request = Request::builder()
                .method(Method::POST)
                .uri(url.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, "switchyard")
                .body(Full::new(Bytes::from(context.to_string())));
            (url.clone(), request)
        }
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return no_data(format!("cannot build the request: {e}")),
    };
    let client = match clients.for_url(&url, None) {
        Ok(c) => c,
        Err(e) => return no_data(format!("TLS set-up: {e}")),
    };
    let call = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), ANSWER_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, call).await {
        Err(_) => return no_data(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => return no_data(e),
        Ok(Ok(answer)) => answer,
    };
    match &gate.source {
        ExternalSource::Prometheus { .. } => prometheus_answer(status.as_u16(), &body),
        ExternalSource::Webhook { .. } if !status.is_success() => {
            no_data(format!("HTTP {}{}", status.as_u16(), quoted(&body)))
        }
        ExternalSource::Webhook { .. } => webhook_answer(&body),
    }
}

fn no_data(reason: String) -> Reading {
    Reading::NoData { reason }
}

/// `: <the first characters of the body>`, or nothing for an empty body.
fn quoted(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .take(SNIPPET_CHARS)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Reads Prometheus' answer to an instant query: one sample of a vector, or a scalar.
pub(super) fn prometheus_answer(status: u16, body: &[u8]) -> Reading {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return no_data(format!(
            "prometheus answered HTTP {status} that is not JSON{}",
            quoted(body)
        ));
    };
    if v["status"] != "success" {
        return no_data(format!(
            "prometheus answered HTTP {status}: {}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("no error message")
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) => return no_data("the query returned no sample".into()),
            Some(many) => {
                return no_data(format!(
                    "the query returned {} samples; aggregate them to one (sum, max, ...)",
                    many.len()
                ))
            }
            None => return no_data("the vector's result is not a list".into()),
        },
        Some(other) => {
            return no_data(format!(
            "the query returned a {other}; an instant vector of one sample or a scalar is needed"
        ))
        }
        None => return no_data("the answer has no resultType".into()),
    };
    // A sample is `[timestamp, "value"]`, the value a string ("NaN" and "+Inf" included).
    match sample[1].as_str().map(|s| s.parse::<f64>()) {
        Some(Ok(value)) => Reading::Value { value },
        _ => no_data(format!("the sample {sample} has no readable value")),
    }
}

/// Reads a webhook check's answer: `{"pass": bool}` or `{"value": number}`.
pub(super) fn webhook_answer(body: &[u8]) -> Reading {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return no_data(format!("the answer is not JSON{}", quoted(body))),
    };
    if let Some(pass) = v["pass"].as_bool() {
        return Reading::Verdict { pass };
    }
    if let Some(value) = v["value"].as_f64() {
        return Reading::Value { value };
    }
    no_data(format!(
        "the answer has neither \"pass\": true|false nor \"value\": <number>{}",
        quoted(body)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(r: Reading) -> f64 {
        match r {
            Reading::Value { value } => value,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn reason(r: Reading) -> String {
        match r {
            Reading::NoData { reason } => reason,
            other => panic!("expected no data, got {other:?}"),
        }
    }

    #[test]
    fn prometheus_answers_give_one_value_or_say_why_not() {
        let vector = |result: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}"#
            )
        };
        let one = vector(r#"{"metric":{"version":"v2"},"value":[1700000000.5,"12.5"]}"#);
        assert_eq!(value(prometheus_answer(200, one.as_bytes())), 12.5);
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"0.25"]}}"#;
        assert_eq!(value(prometheus_answer(200, scalar.as_bytes())), 0.25);
        let nan = vector(r#"{"metric":{},"value":[1,"NaN"]}"#);
        assert!(value(prometheus_answer(200, nan.as_bytes())).is_nan());
        assert_eq!(
            reason(prometheus_answer(200, vector("").as_bytes())),
            "the query returned no sample"
        );
        let two =
            vector(r#"{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}"#);
        assert!(reason(prometheus_answer(200, two.as_bytes()))
            .starts_with("the query returned 2 samples"));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(reason(prometheus_answer(200, matrix.as_bytes())).contains("returned a matrix"));
        let bad =
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        assert_eq!(
            reason(prometheus_answer(400, bad.as_bytes())),
            "prometheus answered HTTP 400: bad_data: 1:5: parse error: unexpected"
        );
        assert_eq!(
            reason(prometheus_answer(502, b"<html>bad gateway</html>")),
            "prometheus answered HTTP 502 that is not JSON: <html>bad gateway</html>"
        );
    }

    #[test]
    fn webhook_answers_give_a_verdict_a_value_or_say_why_not() {
        assert_eq!(
            webhook_answer(br#"{"pass": false}"#),
            Reading::Verdict { pass: false }
        );
        assert_eq!(
            webhook_answer(br#"{"pass": true, "value": 3}"#),
            Reading::Verdict { pass: true }
        );
        assert_eq!(value(webhook_answer(br#"{"value": 0.5}"#)), 0.5);
        assert!(reason(webhook_answer(br#"{"ok": 1}"#)).contains("neither \"pass\""));
        assert_eq!(
            reason(webhook_answer(b"yes")),
            "the answer is not JSON: yes"
        );
    }
}
