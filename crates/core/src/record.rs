//! What the gateway logs for every prediction and what feedback attaches to it.

use serde::{Deserialize, Serialize};

/// Whether a record served the client or was a mirrored copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Serving,
    Shadow,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Shadow => "shadow",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "serving" => Some(Role::Serving),
            "shadow" => Some(Role::Shadow),
            _ => None,
        }
    }
}

/// How a call to a model version ended. Every variant but `Ok` and `ClientError` counts
/// against the version. Malformed client requests are mostly rejected before routing and never
/// become records; `ClientError` is a request the backend itself refused as malformed (4xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The backend answered with a non-success status.
    UpstreamStatus,
    /// Connection refused, reset, or failed mid-response.
    Unreachable,
    Timeout,
    /// The backend answered 2xx with a body that is not a prediction.
    MalformedResponse,
    /// The backend refused the request as malformed (400, 413, 415, 422): the client's fault.
    ClientError,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }

    /// Whether this outcome is the model's fault.
    pub fn counts_against_model(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::ClientError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamStatus => "upstream_status",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
            Outcome::MalformedResponse => "malformed_response",
            Outcome::ClientError => "client_error",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Ok,
            Outcome::UpstreamStatus,
            Outcome::Unreachable,
            Outcome::Timeout,
            Outcome::MalformedResponse,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// A model's answer in comparable form: one entry per instance of the request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// Class labels (as strings, so `1` and `"1"` compare equal once normalised).
    Classes(Vec<String>),
    /// Numeric outputs of a regression model.
    Values(Vec<f64>),
    /// No comparable output (the call failed, or the output could not be read).
    #[default]
    None,
}

impl Prediction {
    pub fn len(&self) -> usize {
        match self {
            Prediction::Classes(c) => c.len(),
            Prediction::Values(v) => v.len(),
            Prediction::None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Instance-wise agreement of this (primary) prediction with a shadow's: `Some(matches)`
    /// per instance when both are comparable and of the same shape. Classes agree when equal,
    /// values within `tolerance` (see [`Tolerance::agree`]).
    pub fn agreement(&self, shadow: &Prediction, tolerance: &Tolerance) -> Option<Vec<bool>> {
        match (self, shadow) {
            (Prediction::Classes(a), Prediction::Classes(b))
                if a.len() == b.len() && !a.is_empty() =>
            {
                Some(a.iter().zip(b).map(|(x, y)| x == y).collect())
            }
            (Prediction::Values(a), Prediction::Values(b))
                if a.len() == b.len() && !a.is_empty() =>
            {
                Some(
                    a.iter()
                        .zip(b)
                        .map(|(primary, shadow)| tolerance.agree(*primary, *shadow))
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

/// How close a shadow's regression output must be to the primary's to agree with it:
/// `|shadow − primary| ≤ absolute + relative · |primary|`, numpy's
/// `isclose(shadow, primary, rtol=relative, atol=absolute)`. Never exact equality: two good
/// regressors almost never return the same float.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// In the output's unit.
    pub absolute: f64,
    /// A fraction of the primary's output (0.05 = 5%).
    pub relative: f64,
}

impl Tolerance {
    /// The default of a shadow spec: within 5% of the primary's output, with no absolute
    /// slack. Relative, so it means the same for a yield in percent and a test time in
    /// milliseconds; 5% is about the spread two regressors of similar quality show on the same
    /// input, so agreement falls when one of them moves by more than its own noise. Outputs
    /// that hover around zero need an `absolute` part.
    pub const DEFAULT: Tolerance = Tolerance {
        absolute: 0.0,
        relative: 0.05,
    };

    /// Whether `shadow` agrees with `primary`. Non-finite values never agree.
    pub fn agree(&self, primary: f64, shadow: f64) -> bool {
        (shadow - primary).abs() <= self.absolute + self.relative * primary.abs()
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::DEFAULT
    }
}

/// Reference to the serving record a shadow record is paired with; carried by shadow records
/// so that agreement is computed without a lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRef {
    pub version: String,
    pub output: Prediction,
}

/// One call to one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub request_id: String,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub ts_ms: i64,
    pub model: String,
    /// Routing-table epoch the request was routed under.
    pub epoch: u64,
    pub variant: String,
    pub role: Role,
    pub version: String,
    /// Hash of the routing key, when the request had one.
    pub key_hash: Option<u64>,
    pub outcome: Outcome,
    /// HTTP status returned (serving) or received (shadow).
    pub status: u16,
    pub latency_us: u64,
    pub output: Prediction,
    /// The request body, when input capture sampled it.
    pub input: Option<String>,
    /// For shadow records: the serving answer to compare with.
    pub pair: Option<PairRef>,
    /// The model's declared segment fields and this request's value of each (empty when the
    /// request did not carry it), in the configuration's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<(String, String)>,
}

/// Ground truth for a request, arriving late and in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// True class per instance.
    Labels(Vec<String>),
    /// True value per instance.
    Values(Vec<f64>),
    /// Only business metrics.
    None,
}

/// Feedback on one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub request_id: String,
    pub truth: Truth,
    /// Business metrics (clicks, revenue, …) by name.
    pub metrics: Vec<(String, f64)>,
}

/// Correctness of a prediction against the truth, per instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Scored {
    Correct(Vec<bool>),
    /// Signed errors per instance, `prediction − truth` (negative: an underestimate).
    Errors(Vec<f64>),
}

/// Scores `prediction` against `truth`; `None` when they are not comparable (different kinds
/// or lengths, or a failed call).
pub fn score(prediction: &Prediction, truth: &Truth) -> Option<Scored> {
    match (prediction, truth) {
        (Prediction::Classes(p), Truth::Labels(t)) if p.len() == t.len() && !p.is_empty() => Some(
            Scored::Correct(p.iter().zip(t).map(|(a, b)| a == b).collect()),
        ),
        (Prediction::Values(p), Truth::Values(t)) if p.len() == t.len() && !p.is_empty() => Some(
            Scored::Errors(p.iter().zip(t).map(|(a, b)| a - b).collect()),
        ),
        _ => None,
    }
}
