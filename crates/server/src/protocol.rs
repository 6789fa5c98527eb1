//! The wire formats the data plane speaks, and how a comparable [`Prediction`] is read from
//! each.
//!
//! - Open Inference Protocol v2 (`POST /v2/models/{m}/infer`, as MLServer, Triton, KServe):
//!   `{"inputs": [{"name", "shape", "datatype", "data"}]}` → `{"outputs": [...]}`.
//! - KServe v1 / TF-Serving (`POST /v1/models/{m}:predict`): `{"instances": [[...], ...]}` →
//!   `{"predictions": [...]}`.
//! - Plain JSON to a URL, with the prediction at a configured JSON pointer of the response.
//!
//! Tabular numeric requests can be translated between v1 and v2, so a client speaking one can
//! be served by a backend speaking the other or by an in-process ONNX model.

use serde_json::{json, Value};
use switchyard_core::config::Task;
use switchyard_core::Prediction;

use crate::json_scan::{first, Leaf, Leaves, Scanner};

/// The protocol of a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    V2,
    V1,
}

/// A request body known to be one JSON object, kept as the client's bytes. The tree is built
/// only when something reads it (a JSON-pointer routing key, a protocol translation, an ONNX
/// model): forwarding to a backend of the client's own protocol never needs it.
///
/// An OIP v2 request of the binary tensor data extension is the same JSON object (the
/// *header*, the first `Inference-Header-Content-Length` bytes) followed by the raw data of
/// the inputs that declare `parameters.binary_data_size`, in input order: `bytes` holds both,
/// `value()` reads the header, and [`JsonBody::binary`] says where each input's data is.
#[derive(Debug)]
pub struct JsonBody {
    bytes: bytes::Bytes,
    tree: std::sync::OnceLock<Value>,
    /// Binary inputs, when the request has a binary part.
    binary: Option<Box<BinaryInputs>>,
    /// Which outputs the client wants as raw bytes (`None`: none; the common case).
    binary_outputs: Option<Box<BinaryOutputs>>,
}

/// Where the binary part of a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryInputs {
    /// Length of the JSON header at the start of the body.
    pub header_len: usize,
    /// Per input, in order: the range of the body holding its raw data (inputs with JSON
    /// `data` have `None`).
    pub inputs: Vec<Option<std::ops::Range<usize>>>,
}

/// Which outputs a request wants answered as raw bytes: every output when the request's
/// `parameters.binary_data_output` is true, except those a requested output's
/// `parameters.binary_data` says otherwise of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryOutputs {
    pub all: bool,
    pub named: Vec<(String, bool)>,
}

impl BinaryOutputs {
    pub fn wants(&self, output: &str) -> bool {
        self.named
            .iter()
            .find(|(n, _)| n == output)
            .map_or(self.all, |(_, b)| *b)
    }
}

/// The header that splits a binary request or answer into its JSON and its raw tensor data.
pub const BINARY_HEADER: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("inference-header-content-length");

impl JsonBody {
    /// Checks that `bytes` is one well-formed JSON object, without building it.
    pub fn validate(bytes: bytes::Bytes) -> Result<JsonBody, InvalidBody> {
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|e| InvalidBody::NotJson(e.to_string()))?;
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(InvalidBody::NotAnObject);
        }
        Ok(JsonBody {
            bytes,
            tree: std::sync::OnceLock::new(),
            binary: None,
            binary_outputs: None,
        })
    }

    /// Checks that `bytes` is an Open Inference Protocol v2 request: one JSON object whose
    /// tensor declarations hold (see [`InvalidBody::BadTensor`]), in one pass over the bytes
    /// that builds no tree. With `header_len` (the request's `Inference-Header-Content-Length`)
    /// the JSON is the first `header_len` bytes and the binary data after it must be exactly
    /// what the inputs' `binary_data_size` declare, each filling its shape.
    pub fn validate_v2(
        bytes: bytes::Bytes,
        header_len: Option<usize>,
    ) -> Result<JsonBody, InvalidBody> {
        let json = match header_len {
            None => &bytes[..],
            Some(n) => bytes.get(..n).ok_or_else(|| {
                InvalidBody::BadTensor(format!(
                    "Inference-Header-Content-Length {n} runs past the end of the {}-byte body",
                    bytes.len()
                ))
            })?,
        };
        // Checked as UTF-8 once, then parsed as text: `from_slice` checks each string it meets
        // on its own, ~100 instructions apiece (BENCHMARKS.md, "Proxy cost").
        let text = std::str::from_utf8(json)
            .map_err(|e| InvalidBody::NotJson(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        // The common request (JSON data, nothing binary) is read by the scanner; serde's path
        // takes the rest and words every refusal.
        let (binary, binary_outputs) = match header_len {
            None if plain_v2_request(text).is_some() => (None, None),
            _ => read_v2(text, header_len.map(|n| (n, &bytes[n..])))?,
        };
        Ok(JsonBody {
            bytes,
            tree: std::sync::OnceLock::new(),
            binary: binary.map(Box::new),
            binary_outputs: binary_outputs.map(Box::new),
        })
    }

    /// A body built by switchyard itself (validation calls), tree already at hand.
    pub fn from_value(value: Value) -> JsonBody {
        JsonBody {
            bytes: bytes::Bytes::from(value.to_string()),
            tree: std::sync::OnceLock::from(value),
            binary: None,
            binary_outputs: None,
        }
    }

    /// The body as the client sent it (with its binary part, if any).
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// The binary part's layout, when the request has one.
    pub fn binary(&self) -> Option<&BinaryInputs> {
        self.binary.as_deref()
    }

    /// The outputs the client wants as raw bytes, when it wants any.
    pub fn binary_outputs(&self) -> Option<&BinaryOutputs> {
        self.binary_outputs.as_deref()
    }

    /// The raw data of input `index`, when it came as binary.
    pub fn raw_input(&self, index: usize) -> Option<&[u8]> {
        let range = self.binary.as_ref()?.inputs.get(index)?.clone()?;
        self.bytes.get(range)
    }

    /// The parsed body (its JSON header for a binary request; parsed on first use).
    pub fn value(&self) -> &Value {
        // The bytes were validated as a JSON object, so parsing cannot fail; `Null` would
        // only make the caller's shape checks refuse the request.
        self.tree.get_or_init(|| {
            let json = match &self.binary {
                Some(b) => &self.bytes[..b.header_len],
                None => &self.bytes[..],
            };
            serde_json::from_slice(json).unwrap_or(Value::Null)
        })
    }

    /// The request as plain JSON: the header with every binary input's data decoded into its
    /// `data` and the binary parameters (`binary_data_size`, `binary_data`,
    /// `binary_data_output`) dropped. For backends that do not speak the extension and for
    /// captured inputs; the body itself for a request without a binary part.
    pub fn plain_json(&self) -> Result<Value, BadRequest> {
        let mut value = self.value().clone();
        if self.binary.is_none() && self.binary_outputs.is_none() {
            return Ok(value);
        }
        if let Some(inputs) = value.get_mut("inputs").and_then(Value::as_array_mut) {
            for (i, input) in inputs.iter_mut().enumerate() {
                let Some(raw) = self.raw_input(i) else {
                    continue;
                };
                let datatype = input["datatype"].as_str().unwrap_or_default().to_string();
                let data = crate::tensor::to_json(&datatype, raw)
                    .map_err(|e| BadRequest(format!("inputs[{i}]: {e}")))?;
                input["data"] = Value::Array(data);
                drop_param(input, "binary_data_size");
            }
        }
        if let Some(outputs) = value.get_mut("outputs").and_then(Value::as_array_mut) {
            outputs
                .iter_mut()
                .for_each(|o| drop_param(o, "binary_data"));
        }
        drop_param(&mut value, "binary_data_output");
        Ok(value)
    }

    /// An owned copy that does not share the original buffer (which may be a slice of a
    /// connection's read buffer); the tree comes along if it was built.
    pub fn detached(&self) -> JsonBody {
        let tree = std::sync::OnceLock::new();
        if let Some(v) = self.tree.get() {
            let _ = tree.set(v.clone());
        }
        JsonBody {
            bytes: bytes::Bytes::copy_from_slice(&self.bytes),
            tree,
            binary: self.binary.clone(),
            binary_outputs: self.binary_outputs.clone(),
        }
    }
}

/// Removes `key` from `value.parameters`, and `parameters` itself when that empties it.
fn drop_param(value: &mut Value, key: &str) {
    if let Some(params) = value.get_mut("parameters").and_then(Value::as_object_mut) {
        params.remove(key);
        if params.is_empty() {
            if let Some(o) = value.as_object_mut() {
                o.remove("parameters");
            }
        }
    }
}

/// Why [`JsonBody::validate`] refused a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBody {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// An OIP v2 request whose tensors are not declared as the protocol says: an input without
    /// a name, an unknown datatype, a shape that is not concrete or that its data does not fill
    /// with values of its type. The message names the input.
    #[error("{0}")]
    BadTensor(String),
}

/// Why a request body cannot be used: the client's fault, answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Why a backend's answer cannot be read: the model's fault, answered with 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadResponse(pub String);

fn flatten_numbers(value: &Value, out: &mut Vec<f32>) -> Result<(), BadRequest> {
    match value {
        Value::Number(n) => {
            let x = n
                .as_f64()
                .ok_or_else(|| BadRequest(format!("{n} is not a number")))?;
            out.push(x as f32);
            Ok(())
        }
        Value::Bool(b) => {
            out.push(f32::from(u8::from(*b)));
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| flatten_numbers(v, out)),
        other => Err(BadRequest(format!(
            "expected numbers, found {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The tensor datatypes of the Open Inference Protocol.
pub const DATATYPES: [&str; 13] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES",
];

/// The most elements one request tensor may declare (a request body is bounded anyway; this
/// only words the refusal of an absurd shape before counting).
const MAX_TENSOR_ELEMENTS: u64 = 1 << 32;

/// An OIP v2 request as far as validation reads it; everything else is ignored.
#[derive(serde::Deserialize)]
struct V2Request {
    inputs: Option<Vec<TensorDecl>>,
    outputs: Option<Vec<OutputDecl>>,
    parameters: Option<RequestParams>,
}

#[derive(serde::Deserialize)]
struct TensorDecl {
    name: Option<Value>,
    shape: Option<Vec<Value>>,
    datatype: Option<Value>,
    data: Option<Leaves>,
    parameters: Option<InputParams>,
}

#[derive(serde::Deserialize)]
struct InputParams {
    binary_data_size: Option<Value>,
}

#[derive(serde::Deserialize)]
struct RequestParams {
    binary_data_output: Option<Value>,
}

#[derive(serde::Deserialize)]
struct OutputDecl {
    name: Option<String>,
    parameters: Option<OutputParams>,
}

#[derive(serde::Deserialize)]
struct OutputParams {
    binary_data: Option<Value>,
}

impl V2Request {
    /// The outputs wanted as raw bytes, `None` when none is.
    fn binary_outputs(&self) -> Option<BinaryOutputs> {
        let all = self
            .parameters
            .as_ref()
            .and_then(|p| p.binary_data_output.as_ref())
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let named: Vec<(String, bool)> = self
            .outputs
            .iter()
            .flatten()
            .filter_map(|o| {
                let flag = o.parameters.as_ref()?.binary_data.as_ref()?.as_bool()?;
                Some((o.name.clone()?, flag))
            })
            .collect();
        (all || named.iter().any(|(_, b)| *b)).then_some(BinaryOutputs { all, named })
    }
}

/// How an error names an input: `inputs[i] ('name')`.
struct InputAt<'a>(usize, &'a str);

impl std::fmt::Display for InputAt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inputs[{}] ('{}')", self.0, self.1)
    }
}

impl<'de> serde::Deserialize<'de> for Leaves {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Leaves;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tensor data")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Leaves, E> {
                Ok(Leaves {
                    bools: 1,
                    ..Leaves::default()
                })
            }
            fn visit_i64<E>(self, _: i64) -> Result<Leaves, E> {
                Ok(Leaves {
                    numbers: 1,
                    ..Leaves::default()
                })
            }
            fn visit_u64<E>(self, _: u64) -> Result<Leaves, E> {
                Ok(Leaves {
                    numbers: 1,
                    ..Leaves::default()
                })
            }
            fn visit_f64<E>(self, _: f64) -> Result<Leaves, E> {
                Ok(Leaves {
                    numbers: 1,
                    ..Leaves::default()
                })
            }
            fn visit_str<E>(self, _: &str) -> Result<Leaves, E> {
                Ok(Leaves {
                    strings: 1,
                    ..Leaves::default()
                })
            }
            fn visit_unit<E>(self) -> Result<Leaves, E> {
                Ok(Leaves {
                    other: 1,
                    ..Leaves::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Leaves, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Leaves {
                    other: 1,
                    ..Leaves::default()
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Leaves, A::Error> {
                let mut total = Leaves::default();
                while let Some(item) = seq.next_element::<Leaves>()? {
                    total.add(item);
                }
                Ok(total)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The serde path of [`JsonBody::validate_v2`]: the request's JSON `text` (and its binary
/// part, with the JSON's length) checked, binary inputs and outputs found.
fn read_v2(
    text: &str,
    binary: Option<(usize, &[u8])>,
) -> Result<(Option<BinaryInputs>, Option<BinaryOutputs>), InvalidBody> {
    let object = text.trim_ascii_start().starts_with('{');
    let request: V2Request = match serde_json::from_str(text) {
        Ok(request) if object => request,
        Ok(_) => return Err(InvalidBody::NotAnObject),
        Err(e) if e.is_data() && !object => return Err(InvalidBody::NotAnObject),
        Err(e) if e.is_data() => {
            return Err(InvalidBody::BadTensor(format!(
                "not an inference request: {e}"
            )))
        }
        Err(e) => return Err(InvalidBody::NotJson(e.to_string())),
    };
    let outputs = request.binary_outputs();
    let inputs = check_tensors(request, binary).map_err(|e| InvalidBody::BadTensor(e.0))?;
    Ok((inputs, outputs))
}

/// `Some` when `text` is an OIP v2 request that the serde path of [`JsonBody::validate_v2`]
/// accepts, with no binary inputs or outputs, read by [`Scanner`] in one pass. `None` says
/// nothing: the request may still be good (escapes in a string, `null` for an optional field,
/// binary parameters) or be bad, and serde's path decides and words the error.
fn plain_v2_request(text: &str) -> Option<()> {
    let mut s = Scanner::new(text);
    let (mut inputs, mut outputs, mut parameters) = (0usize, false, false);
    let mut seen_inputs = false;
    s.object(|s, key| match key {
        "inputs" => {
            first(&mut seen_inputs)?;
            s.array(|s| {
                inputs += 1;
                plain_input(s)
            })
        }
        "outputs" => {
            first(&mut outputs)?;
            s.array(|s| {
                let mut name = false;
                s.object(|s, key| match key {
                    "name" => first(&mut name).and_then(|()| s.string().map(drop)),
                    // `binary_data` may be in it.
                    "parameters" => None,
                    _ => s.skip(),
                })
            })
        }
        "parameters" => {
            first(&mut parameters)?;
            s.object(|s, key| match key {
                "binary_data_output" => None,
                _ => s.skip(),
            })
        }
        _ => s.skip(),
    })?;
    (s.at_end() && inputs > 0).then_some(())
}

/// One input of [`plain_v2_request`]: `Some` when [`check_tensors`] passes it with JSON data.
fn plain_input(s: &mut Scanner<'_>) -> Option<()> {
    let (mut name, mut datatype, mut elements, mut data) = (None, None, None, None);
    let mut parameters = false;
    s.object(|s, key| match key {
        "name" if name.is_none() => {
            name = Some(s.string()?);
            Some(())
        }
        "datatype" if datatype.is_none() => {
            datatype = Some(s.string()?);
            Some(())
        }
        "shape" if elements.is_none() => {
            let mut n: u64 = 1;
            s.array(|s| {
                n = n
                    .checked_mul(s.count()?)
                    .filter(|n| *n <= MAX_TENSOR_ELEMENTS)?;
                Some(())
            })?;
            elements = Some(n);
            Some(())
        }
        // `null` is serde's "no data"; left to it.
        "data" if data.is_none() && s.peek() != Some(b'n') => {
            data = Some(s.count_leaves()?);
            Some(())
        }
        "parameters" => {
            first(&mut parameters)?;
            s.object(|s, key| match key {
                "binary_data_size" => None,
                _ => s.skip(),
            })
        }
        "name" | "datatype" | "shape" | "data" => None,
        _ => s.skip(),
    })?;
    let (elements, data) = (elements?, data?);
    let datatype = datatype.filter(|d| DATATYPES.contains(d))?;
    let right = match datatype {
        "BYTES" => data.strings,
        "BOOL" => data.bools,
        _ => data.numbers,
    };
    (name.is_some_and(|n| !n.is_empty()) && data.total() == elements && right == elements)
        .then_some(())
}

/// Checks an OIP v2 request's tensor declarations: every input has a name, a known datatype
/// and a concrete shape whose element count its data fills exactly, with values of that
/// datatype. The error names the input.
///
/// `binary` is the request's binary part (with the header's length) when it has one: inputs
/// declaring `parameters.binary_data_size` take their data from it, in order, and together
/// must use all of it. Returns where each binary input's data lie.
fn check_tensors(
    request: V2Request,
    binary: Option<(usize, &[u8])>,
) -> Result<Option<BinaryInputs>, BadRequest> {
    let mut offset = 0usize;
    let mut ranges = Vec::new();
    let inputs = request.inputs.filter(|i| !i.is_empty()).ok_or_else(|| {
        BadRequest("body needs an \"inputs\" array with at least one tensor".into())
    })?;
    for (i, input) in inputs.iter().enumerate() {
        let name = match &input.name {
            Some(Value::String(n)) if !n.is_empty() => n.as_str(),
            _ => return Err(BadRequest(format!("inputs[{i}] needs a \"name\""))),
        };
        // Formatted only into an error (a `format!` here cost ~700 instructions per request).
        let at = InputAt(i, name);
        let datatype = match &input.datatype {
            Some(Value::String(d)) if DATATYPES.contains(&d.as_str()) => d.as_str(),
            Some(Value::String(d)) => {
                return Err(BadRequest(format!(
                    "{at}: unknown datatype '{d}' (one of {})",
                    DATATYPES.join(", ")
                )))
            }
            _ => return Err(BadRequest(format!("{at} needs a \"datatype\""))),
        };
        let shape = input
            .shape
            .as_ref()
            .ok_or_else(|| BadRequest(format!("{at} needs a \"shape\"")))?;
        let mut elements: u64 = 1;
        for d in shape {
            let dim = match d.as_i64() {
                Some(x) if x >= 0 => x as u64,
                Some(_) => {
                    return Err(BadRequest(format!(
                        "{at}: shape {} has a negative dimension; a request's shape is concrete",
                        Value::Array(shape.clone())
                    )))
                }
                None => {
                    return Err(BadRequest(format!(
                        "{at}: shape {} must hold integers",
                        Value::Array(shape.clone())
                    )))
                }
            };
            elements = elements
                .checked_mul(dim)
                .filter(|n| *n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    BadRequest(format!(
                        "{at}: shape {} declares more than {MAX_TENSOR_ELEMENTS} elements",
                        Value::Array(shape.clone())
                    ))
                })?;
        }
        if let Some(size) = input
            .parameters
            .as_ref()
            .and_then(|p| p.binary_data_size.as_ref())
        {
            let Some((header_len, raw)) = binary else {
                return Err(BadRequest(format!(
                    "{at} declares binary_data_size but the request has no Inference-Header-Content-Length header saying where its JSON ends"
                )));
            };
            let size = size.as_u64().ok_or_else(|| {
                BadRequest(format!("{at}: binary_data_size {size} is not a byte count"))
            })? as usize;
            if input.data.is_some() {
                return Err(BadRequest(format!(
                    "{at} has both \"data\" and binary_data_size; send one"
                )));
            }
            let end = offset.saturating_add(size);
            let Some(bytes) = raw.get(offset..end) else {
                return Err(BadRequest(format!(
                    "{at}: binary_data_size {size} runs past the end of the body (the binary part has {} bytes, {} of them left for this input)",
                    raw.len(),
                    raw.len().saturating_sub(offset)
                )));
            };
            crate::tensor::check(datatype, bytes, elements).map_err(|e| {
                BadRequest(format!(
                    "{at}: binary_data_size {size} does not fit shape {} of {datatype}: {e}",
                    Value::Array(shape.clone())
                ))
            })?;
            ranges.resize(i, None);
            ranges.push(Some(header_len + offset..header_len + end));
            offset = end;
            continue;
        }
        let data = input
            .data
            .ok_or_else(|| BadRequest(format!("{at} needs \"data\"")))?;
        if data.total() != elements {
            return Err(BadRequest(format!(
                "{at}: shape {} needs {elements} values, data holds {}",
                Value::Array(shape.clone()),
                data.total()
            )));
        }
        let (wanted, right) = match datatype {
            "BYTES" => ("strings", data.strings),
            "BOOL" => ("booleans", data.bools),
            _ => ("numbers", data.numbers),
        };
        if right != elements {
            return Err(BadRequest(format!(
                "{at}: {datatype} data must hold {wanted}; {} of {elements} values are not",
                elements - right
            )));
        }
    }
    let Some((header_len, raw)) = binary else {
        return Ok(None);
    };
    if offset != raw.len() {
        return Err(BadRequest(format!(
            "the body has {} bytes of binary data after the JSON header but the inputs' binary_data_size declare {offset}",
            raw.len()
        )));
    }
    ranges.resize(inputs.len(), None);
    Ok(Some(BinaryInputs {
        header_len,
        inputs: ranges,
    }))
}

/// Reads a request as a batch of numeric rows (for ONNX models and protocol translation).
pub fn request_rows(wire: Wire, body: &Value) -> Result<Vec<Vec<f32>>, BadRequest> {
    match wire {
        Wire::V2 => {
            let input = body
                .get("inputs")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .ok_or_else(|| {
                    BadRequest("body needs an \"inputs\" array with one tensor".into())
                })?;
            let mut data = Vec::new();
            flatten_numbers(input.get("data").unwrap_or(&Value::Null), &mut data)
                .map_err(|e| BadRequest(format!("inputs[0].data: {e}")))?;
            rows_from_flat(data, &shape_of(input))
        }
        Wire::V1 => {
            let instances = body
                .get("instances")
                .or_else(|| body.get("inputs"))
                .and_then(Value::as_array)
                .ok_or_else(|| BadRequest("body needs an \"instances\" array".into()))?;
            if instances.is_empty() {
                return Err(BadRequest("\"instances\" is empty".into()));
            }
            let rows: Vec<Vec<f32>> = instances
                .iter()
                .enumerate()
                .map(|(i, inst)| {
                    let mut row = Vec::new();
                    flatten_numbers(inst, &mut row)
                        .map_err(|e| BadRequest(format!("instances[{i}]: {e}")))?;
                    Ok(row)
                })
                .collect::<Result<_, BadRequest>>()?;
            // A batch is a matrix: every instance has the first one's width.
            if let Some(i) = rows.iter().position(|r| r.len() != rows[0].len()) {
                return Err(BadRequest(format!(
                    "instances[{i}] has {} values but instances[0] has {}",
                    rows[i].len(),
                    rows[0].len()
                )));
            }
            Ok(rows)
        }
    }
}

/// A tensor declaration's shape (non-integers dropped).
fn shape_of(tensor: &Value) -> Vec<usize> {
    tensor
        .get("shape")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_u64)
                .map(|d| d as usize)
                .collect()
        })
        .unwrap_or_default()
}

/// Cuts the flat data of `inputs[0]` into rows by its shape.
fn rows_from_flat(data: Vec<f32>, shape: &[usize]) -> Result<Vec<Vec<f32>>, BadRequest> {
    let width = match shape {
        [_, w] => *w,
        [w] if data.len() == *w => *w,
        [n] => data.len() / (*n).max(1),
        _ => {
            return Err(BadRequest(
                "inputs[0].shape must be [rows, features]".into(),
            ))
        }
    };
    if width == 0 || data.is_empty() || !data.len().is_multiple_of(width) {
        return Err(BadRequest(format!(
            "inputs[0]: {} values do not fill a shape of {:?}",
            data.len(),
            shape
        )));
    }
    Ok(data.chunks(width).map(<[f32]>::to_vec).collect())
}

/// Reads a request as a batch of numeric rows like [`request_rows`], the first input's data
/// straight from the binary part when it came as raw bytes.
pub fn body_rows(wire: Wire, body: &JsonBody) -> Result<Vec<Vec<f32>>, BadRequest> {
    match (wire, body.raw_input(0)) {
        (Wire::V2, Some(raw)) => {
            let input = &body.value()["inputs"][0];
            let datatype = input["datatype"].as_str().unwrap_or_default();
            let data = crate::tensor::to_f32(datatype, raw)
                .map_err(|e| BadRequest(format!("inputs[0]: {e}")))?;
            rows_from_flat(data, &shape_of(input))
        }
        _ => request_rows(wire, body.value()),
    }
}

/// An OIP v2 answer with the outputs `wanted` names moved to a binary part (an output without
/// a `datatype` stays JSON): the body and the length of its JSON header, for the response's
/// `Inference-Header-Content-Length`.
pub fn binary_answer(
    answer: &Value,
    wanted: &BinaryOutputs,
) -> Result<(bytes::Bytes, usize), BadResponse> {
    let mut answer = answer.clone();
    let mut raw = Vec::new();
    if let Some(outputs) = answer.get_mut("outputs").and_then(Value::as_array_mut) {
        for output in outputs {
            let name = output["name"].as_str().unwrap_or_default();
            let Some(datatype) = output["datatype"].as_str() else {
                continue;
            };
            if !wanted.wants(name) || output.get("data").is_none() {
                continue;
            }
            let bytes = crate::tensor::from_json(datatype, &output["data"])
                .map_err(|e| BadResponse(format!("output '{name}': {e}")))?;
            if let Some(o) = output.as_object_mut() {
                o.remove("data");
            }
            if !output["parameters"].is_object() {
                output["parameters"] = json!({});
            }
            output["parameters"]["binary_data_size"] = json!(bytes.len());
            raw.extend_from_slice(&bytes);
        }
    }
    let mut body = answer.to_string().into_bytes();
    let header_len = body.len();
    body.extend_from_slice(&raw);
    Ok((bytes::Bytes::from(body), header_len))
}

/// A binary OIP v2 answer (a JSON header of `header_len` bytes, then the raw data of the
/// outputs declaring `binary_data_size`, in order) as plain JSON.
pub fn decode_binary_answer(body: &[u8], header_len: usize) -> Result<Value, BadResponse> {
    let header = body.get(..header_len).ok_or_else(|| {
        BadResponse(format!(
            "Inference-Header-Content-Length {header_len} runs past the end of the {}-byte answer",
            body.len()
        ))
    })?;
    let mut answer: Value = serde_json::from_slice(header)
        .map_err(|e| BadResponse(format!("the JSON header is not JSON: {e}")))?;
    let mut at = header_len;
    if let Some(outputs) = answer.get_mut("outputs").and_then(Value::as_array_mut) {
        for output in outputs {
            let Some(size) = output
                .pointer("/parameters/binary_data_size")
                .and_then(Value::as_u64)
            else {
                continue;
            };
            let name = output["name"].as_str().unwrap_or_default().to_string();
            let raw = body.get(at..at + size as usize).ok_or_else(|| {
                BadResponse(format!(
                    "output '{name}': binary_data_size {size} runs past the end of the answer"
                ))
            })?;
            at += size as usize;
            let datatype = output["datatype"].as_str().unwrap_or_default();
            let data = crate::tensor::to_json(datatype, raw)
                .map_err(|e| BadResponse(format!("output '{name}': {e}")))?;
            output["data"] = Value::Array(data);
            drop_param(output, "binary_data_size");
        }
    }
    Ok(answer)
}

/// Builds a request body in `wire` format from numeric rows.
pub fn rows_to_request(wire: Wire, rows: &[Vec<f32>]) -> Value {
    match wire {
        Wire::V1 => json!({ "instances": rows }),
        Wire::V2 => {
            let width = rows.first().map_or(0, Vec::len);
            let data: Vec<f32> = rows.iter().flatten().copied().collect();
            json!({ "inputs": [{ "name": "input", "shape": [rows.len(), width], "datatype": "FP32", "data": data }] })
        }
    }
}

/// A class label as a string: integral numbers lose their fraction (`1.0` → `"1"`).
pub fn label_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else {
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    Some(format!("{}", f as i64))
                } else {
                    Some(f.to_string())
                }
            }
        }
        _ => None,
    }
}

fn argmax(row: &[f64]) -> Option<usize> {
    row.iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

fn class_name(index: usize, classes: Option<&[String]>) -> String {
    classes
        .and_then(|c| c.get(index))
        .cloned()
        .unwrap_or_else(|| index.to_string())
}

fn numbers(values: &[Value]) -> Option<Vec<f64>> {
    values.iter().map(Value::as_f64).collect()
}

/// Reads one element per instance: a number or label, or a row of class probabilities.
fn normalise_items(
    items: &[Value],
    task: Task,
    classes: Option<&[String]>,
) -> Result<Prediction, BadResponse> {
    if items.is_empty() {
        return Err(BadResponse("the prediction is empty".into()));
    }
    match task {
        Task::Classification => items
            .iter()
            .map(|item| match item {
                Value::Array(row) => {
                    let row = numbers(row).ok_or_else(|| {
                        BadResponse("a probability row holds a non-number".into())
                    })?;
                    if row.len() == 1 {
                        // A single score: the probability of the positive class.
                        return Ok(if row[0] >= 0.5 {
                            class_name(1, classes)
                        } else {
                            class_name(0, classes)
                        });
                    }
                    argmax(&row)
                        .map(|i| class_name(i, classes))
                        .ok_or_else(|| BadResponse("empty probability row".into()))
                }
                Value::Object(map) => map
                    .get("label")
                    .or_else(|| map.get("class"))
                    .or_else(|| map.get("prediction"))
                    .and_then(label_of)
                    .ok_or_else(|| {
                        BadResponse("a prediction object has no label, class or prediction".into())
                    }),
                other => label_of(other)
                    .ok_or_else(|| BadResponse(format!("a prediction is {}", kind(other)))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Prediction::Classes),
        Task::Regression => items
            .iter()
            .map(|item| match item {
                Value::Number(n) => n.as_f64().ok_or_else(|| BadResponse("not a number".into())),
                Value::Array(row) => row.first().and_then(Value::as_f64).ok_or_else(|| {
                    BadResponse("a prediction row does not start with a number".into())
                }),
                Value::Object(map) => map
                    .get("value")
                    .or_else(|| map.get("prediction"))
                    .and_then(Value::as_f64)
                    .ok_or_else(|| BadResponse("a prediction object has no numeric value".into())),
                other => Err(BadResponse(format!("a prediction is {}", kind(other)))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Prediction::Values),
    }
}

/// Splits a flat OIP tensor into rows according to its shape.
fn tensor_rows(output: &Value) -> Result<Vec<Value>, BadResponse> {
    let data = output
        .get("data")
        .ok_or_else(|| BadResponse("an output has no data array".into()))?;
    let shape: Vec<usize> = output
        .get("shape")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_u64)
                .map(|d| d as usize)
                .collect()
        })
        .unwrap_or_default();
    rows_of(data, &shape)
}

/// The rows of a tensor: its data flattened, cut into rows of `shape[1]` when the shape is
/// `[n, w]` with `w > 1` and fits the data.
fn rows_of(data: &Value, shape: &[usize]) -> Result<Vec<Value>, BadResponse> {
    let data = data
        .as_array()
        .ok_or_else(|| BadResponse("an output has no data array".into()))?;
    let mut flat = Vec::with_capacity(data.len());
    fn push_all(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| push_all(i, out)),
            other => out.push(other.clone()),
        }
    }
    data.iter().for_each(|v| push_all(v, &mut flat));
    Ok(rows_by_shape(flat, shape))
}

/// A tensor's flattened data cut into rows of `shape[1]` when the shape is `[n, w]` with
/// `w > 1` and fits the data.
fn rows_by_shape(flat: Vec<Value>, shape: &[usize]) -> Vec<Value> {
    match shape {
        [n, w] if *w > 1 && n.checked_mul(*w) == Some(flat.len()) => {
            let mut rows = Vec::with_capacity(*n);
            let mut items = flat.into_iter();
            for _ in 0..*n {
                rows.push(Value::Array(items.by_ref().take(*w).collect()));
            }
            rows
        }
        _ => flat,
    }
}

/// The rows of the output [`read_answer`]'s typed path chooses from an OIP v2 answer, read by
/// [`Scanner`]. `None` says nothing (see [`plain_v2_request`]): every output here must have
/// array `data` of scalars, and `name` and `shape`, when present, a plain string and counts.
fn v2_answer_rows(text: &str, task: Task) -> Option<Vec<Value>> {
    struct Output<'a> {
        name: Option<&'a str>,
        shape: Vec<usize>,
        /// Where its `data` starts in the text.
        data: usize,
    }
    let mut s = Scanner::new(text);
    let mut outputs = Vec::new();
    let mut seen = false;
    s.object(|s, key| match key {
        "outputs" => {
            first(&mut seen)?;
            s.array(|s| {
                let (mut name, mut shape, mut data) = (None, None, None);
                s.object(|s, key| match key {
                    "name" if name.is_none() => {
                        name = Some(s.string()?);
                        Some(())
                    }
                    "shape" if shape.is_none() => {
                        let mut dims = Vec::new();
                        s.array(|s| {
                            dims.push(usize::try_from(s.count()?).ok()?);
                            Some(())
                        })?;
                        shape = Some(dims);
                        Some(())
                    }
                    "data" if data.is_none() && s.peek() == Some(b'[') => {
                        data = Some(s.offset());
                        s.skip()
                    }
                    "name" | "shape" | "data" => None,
                    _ => s.skip(),
                })?;
                outputs.push(Output {
                    name,
                    shape: shape.unwrap_or_default(),
                    data: data?,
                });
                Some(())
            })
        }
        _ => s.skip(),
    })?;
    if !(seen && s.at_end()) {
        return None;
    }
    let chosen = choose_output(&outputs, task, |o| o.name)?;
    let mut flat = Vec::new();
    let mut scalars = true;
    Scanner::new(text.get(chosen.data..)?).leaves(&mut |leaf| {
        let value = match leaf {
            // A count is what serde_json makes of it; other numbers are parsed by serde_json.
            Leaf::Number(n) => Scanner::new(n)
                .count()
                .map(Value::from)
                .or_else(|| serde_json::from_str(n).ok()),
            Leaf::String(t) => Some(Value::String(t.to_owned())),
            Leaf::Bool(b) => Some(Value::Bool(b)),
            Leaf::Null => Some(Value::Null),
            Leaf::Object => None,
        };
        match value {
            Some(v) => flat.push(v),
            None => scalars = false,
        }
    })?;
    scalars.then(|| rows_by_shape(flat, &chosen.shape))
}

/// The output a prediction is read from: the first whose name the task prefers, else the
/// first output (`None` when there is none). Classification prefers probabilities: the class is
/// their argmax (label outputs of converted tree ensembles are known to disagree with the
/// probabilities).
fn choose_output<T>(outputs: &[T], task: Task, name: impl Fn(&T) -> Option<&str>) -> Option<&T> {
    let preferred: [&[&str]; 2] = match task {
        Task::Classification => [
            &["probabilities", "predict_proba", "output_probability"],
            &["label", "output_label", "predict", "predictions"],
        ],
        Task::Regression => [&["variable", "value", "predict", "predictions"], &[]],
    };
    preferred
        .iter()
        .find_map(|names| {
            outputs
                .iter()
                .find(|o| name(o).is_some_and(|n| names.contains(&n)))
        })
        .or(outputs.first())
}

/// An OIP v2 answer read without building its whole tree: fields other than `outputs` and
/// the outputs' `name`, `shape` and `data` are skipped.
#[derive(serde::Deserialize)]
struct V2Answer {
    outputs: Vec<V2Output>,
}

#[derive(serde::Deserialize)]
struct V2Output {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    shape: Vec<usize>,
    data: Value,
}

/// What is wrong with a backend's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Unreadable(#[from] BadResponse),
}

/// Reads the comparable prediction straight from the bytes of a backend's answer in `wire`.
/// A well-formed OIP v2 answer takes a typed path; anything else is parsed as a whole and
/// read by [`normalise_response`], which also words the errors.
pub fn read_answer(
    wire: Wire,
    body: &[u8],
    task: Task,
    classes: Option<&[String]>,
) -> Result<Prediction, AnswerError> {
    // As text, for the reason `JsonBody::validate_v2` gives.
    let text = (wire == Wire::V2)
        .then(|| std::str::from_utf8(body).ok())
        .flatten();
    if let Some(rows) = text.and_then(|text| v2_answer_rows(text, task)) {
        return Ok(normalise_items(&rows, task, classes)?);
    }
    let typed = text.and_then(|text| serde_json::from_str::<V2Answer>(text).ok());
    let chosen = typed
        .as_ref()
        .and_then(|a| choose_output(&a.outputs, task, |o| o.name.as_deref()));
    if let Some(chosen) = chosen {
        return Ok(normalise_items(
            &rows_of(&chosen.data, &chosen.shape)?,
            task,
            classes,
        )?);
    }
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| AnswerError::NotJson(e.to_string()))?;
    Ok(normalise_response(wire, &parsed, task, classes)?)
}

/// Reads the comparable prediction from a backend's response body.
pub fn normalise_response(
    wire: Wire,
    body: &Value,
    task: Task,
    classes: Option<&[String]>,
) -> Result<Prediction, BadResponse> {
    match wire {
        Wire::V1 => {
            let items = body
                .get("predictions")
                .and_then(Value::as_array)
                .ok_or_else(|| BadResponse("the response has no \"predictions\" array".into()))?;
            normalise_items(items, task, classes)
        }
        Wire::V2 => {
            let outputs = body
                .get("outputs")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            let chosen = choose_output(outputs, task, |o| o.get("name").and_then(Value::as_str))
                .ok_or_else(|| BadResponse("the response has no \"outputs\" array".into()))?;
            normalise_items(&tensor_rows(chosen)?, task, classes)
        }
    }
}

/// Reads a prediction at a JSON pointer of a plain JSON response.
pub fn normalise_pointer(
    body: &Value,
    pointer: &str,
    task: Task,
    classes: Option<&[String]>,
) -> Result<Prediction, BadResponse> {
    let at = body
        .pointer(pointer)
        .ok_or_else(|| BadResponse(format!("the response has nothing at {pointer}")))?;
    match at {
        Value::Array(items)
            if items.iter().all(|i| !i.is_array())
                && task == Task::Classification
                && items.iter().all(Value::is_number)
                && items.len() > 1 =>
        {
            // A single row of probabilities.
            normalise_items(std::slice::from_ref(at), task, classes)
        }
        Value::Array(items) => normalise_items(items, task, classes),
        single => normalise_items(std::slice::from_ref(single), task, classes),
    }
}

/// Translates a response body from the backend's protocol to the client's.
pub fn translate_response(
    from: Wire,
    to: Wire,
    body: &Value,
    task: Task,
    classes: Option<&[String]>,
    model: &str,
) -> Result<Value, BadResponse> {
    if from == to {
        return Ok(body.clone());
    }
    let prediction = normalise_response(from, body, task, classes)?;
    Ok(prediction_response(to, &prediction, None, model, None))
}

/// Builds a response in `wire` format from a prediction (and class probabilities, if any).
pub fn prediction_response(
    wire: Wire,
    prediction: &Prediction,
    probabilities: Option<&[Vec<f32>]>,
    model: &str,
    version: Option<&str>,
) -> Value {
    let values: Vec<Value> = match prediction {
        Prediction::Classes(c) => c
            .iter()
            .map(|l| l.parse::<i64>().map_or_else(|_| json!(l), |i| json!(i)))
            .collect(),
        Prediction::Values(v) => v.iter().map(|x| json!(x)).collect(),
        Prediction::None => vec![],
    };
    match wire {
        Wire::V1 => json!({ "predictions": values }),
        Wire::V2 => {
            let datatype = match prediction {
                Prediction::Values(_) => "FP64",
                _ if values.iter().all(Value::is_i64) => "INT64",
                _ => "BYTES",
            };
            let mut outputs = vec![
                json!({ "name": "label", "shape": [values.len()], "datatype": datatype, "data": values }),
            ];
            if let Some(p) = probabilities {
                let width = p.first().map_or(0, Vec::len);
                let flat: Vec<f32> = p.iter().flatten().copied().collect();
                outputs.push(json!({ "name": "probabilities", "shape": [p.len(), width], "datatype": "FP32", "data": flat }));
            }
            let mut body = json!({ "model_name": model, "outputs": outputs });
            if let Some(v) = version {
                body["model_version"] = json!(v);
            }
            body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Result<JsonBody, InvalidBody> {
        JsonBody::validate(bytes::Bytes::from(text.to_string()))
    }

    #[test]
    fn a_json_body_is_checked_without_being_built_and_parsed_when_read() {
        let b = body(" \n{\"inputs\": [{\"data\": [1, 2.5]}]}").expect("an object");
        assert!(b.tree.get().is_none(), "validation must not build the tree");
        assert_eq!(b.value().pointer("/inputs/0/data/1"), Some(&json!(2.5)));
        let copy = b.detached();
        assert!(
            copy.tree.get().is_some(),
            "a built tree travels with the copy"
        );
        assert_eq!(copy.bytes(), b.bytes());
        assert!(!std::ptr::eq(copy.bytes().as_ptr(), b.bytes().as_ptr()));
    }

    #[test]
    fn bodies_that_are_not_one_json_object_are_refused() {
        for bad in [
            "",
            "{",
            "{\"a\": }",
            "{} {}",
            "{\"a\": 1} x",
            "nul",
            "{'a': 1}",
        ] {
            assert!(
                matches!(body(bad), Err(InvalidBody::NotJson(_))),
                "{bad:?} accepted"
            );
        }
        for not_object in ["[1, 2]", "3", "\"x\"", "null", " [ {} ]"] {
            assert_eq!(
                body(not_object).err(),
                Some(InvalidBody::NotAnObject),
                "{not_object:?}"
            );
        }
    }

    #[test]
    fn v2_rows_follow_the_shape() {
        let body = json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]});
        assert_eq!(
            request_rows(Wire::V2, &body).unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
        );
        let nested = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1, 2]]}]});
        assert_eq!(
            request_rows(Wire::V2, &nested).unwrap(),
            vec![vec![1.0, 2.0]]
        );
        let bad = json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]});
        assert!(request_rows(Wire::V2, &bad)
            .unwrap_err()
            .0
            .contains("do not fill"));
        assert!(request_rows(Wire::V2, &json!({"instances": []})).is_err());
        assert!(request_rows(Wire::V1, &json!({"instances": [["a"]]}))
            .unwrap_err()
            .0
            .contains("instances[0]"));
        // Found by the `request` fuzz target: ragged batches are refused.
        let ragged = json!({"instances": [[1.0, 2, 0], [3.0, 4.0]]});
        assert!(request_rows(Wire::V1, &ragged)
            .unwrap_err()
            .0
            .contains("instances[1] has 2 values"));
    }

    #[test]
    fn classes_come_from_probabilities_when_present() {
        let body = json!({"outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 1]},
            {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.2, 0.8]}
        ]});
        let p = normalise_response(Wire::V2, &body, Task::Classification, None).unwrap();
        assert_eq!(p, Prediction::Classes(vec!["0".into(), "1".into()]));
        let named = normalise_response(
            Wire::V2,
            &body,
            Task::Classification,
            Some(&["fail".into(), "pass".into()]),
        )
        .unwrap();
        assert_eq!(
            named,
            Prediction::Classes(vec!["fail".into(), "pass".into()])
        );
    }

    #[test]
    fn the_typed_v2_path_reads_what_the_tree_path_reads() {
        let classes = ["fail".to_string(), "pass".to_string()];
        let answers = [
            json!({"model_name": "m", "outputs": [
                {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 1]},
                {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.2, 0.8]}
            ]}),
            json!({"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}]}),
            json!({"outputs": [{"name": "other", "shape": [3, 1], "data": [[0], [1], [1]]}]}),
            json!({"outputs": [{"name": "variable", "shape": [2], "data": [0.25, 7]}]}),
            json!({"outputs": [{"shape": [-1], "data": ["pass", "fail"]}]}),
        ];
        for answer in &answers {
            for task in [Task::Classification, Task::Regression] {
                for names in [None, Some(&classes[..])] {
                    let bytes = answer.to_string();
                    let typed = read_answer(Wire::V2, bytes.as_bytes(), task, names)
                        .map_err(|e| e.to_string());
                    let tree = normalise_response(Wire::V2, answer, task, names)
                        .map_err(|e| format!("{e}"));
                    assert_eq!(typed, tree, "{answer} as {task:?}");
                }
            }
        }
    }

    #[test]
    fn unreadable_v2_answers_are_errors_worded_like_the_tree_path() {
        assert!(matches!(
            read_answer(Wire::V2, b"<html>", Task::Regression, None),
            Err(AnswerError::NotJson(_))
        ));
        // Not UTF-8: the typed path declines and the tree path words the error.
        let answer = b"{\"outputs\": [{\"name\": \"\xe9\", \"shape\": [1], \"data\": [1]}]}";
        assert!(matches!(
            read_answer(Wire::V2, answer, Task::Regression, None),
            Err(AnswerError::NotJson(_))
        ));
        for bad in [
            json!({"outputs": []}),
            json!({"outputs": "x"}),
            json!({"outputs": [{"name": "x"}]}),
            json!({"outputs": [{"name": "x", "data": 3}]}),
            json!({"predictions": [1]}),
        ] {
            let typed = read_answer(Wire::V2, bad.to_string().as_bytes(), Task::Regression, None);
            let tree = normalise_response(Wire::V2, &bad, Task::Regression, None);
            assert_eq!(
                typed.map_err(|e| e.to_string()),
                tree.map_err(|e| e.to_string()),
                "{bad}"
            );
        }
    }

    #[test]
    fn v1_predictions_of_every_shape() {
        let labels = json!({"predictions": [1, 0.0, "2"]});
        assert_eq!(
            normalise_response(Wire::V1, &labels, Task::Classification, None).unwrap(),
            Prediction::Classes(vec!["1".into(), "0".into(), "2".into()])
        );
        let values = json!({"predictions": [[1.5], 2.5]});
        assert_eq!(
            normalise_response(Wire::V1, &values, Task::Regression, None).unwrap(),
            Prediction::Values(vec![1.5, 2.5])
        );
        assert!(normalise_response(
            Wire::V1,
            &json!({"predictions": []}),
            Task::Regression,
            None
        )
        .is_err());
        assert!(normalise_response(Wire::V1, &json!({"oops": 1}), Task::Regression, None).is_err());
        assert!(normalise_response(
            Wire::V2,
            &json!({"outputs": [{"name": "x"}]}),
            Task::Regression,
            None
        )
        .is_err());
    }

    #[test]
    fn pointer_reads_plain_json() {
        let body = json!({"result": {"score": [0.2, 0.8]}, "value": 3.5});
        assert_eq!(
            normalise_pointer(&body, "/result/score", Task::Classification, None).unwrap(),
            Prediction::Classes(vec!["1".into()])
        );
        assert_eq!(
            normalise_pointer(&body, "/value", Task::Regression, None).unwrap(),
            Prediction::Values(vec![3.5])
        );
        assert!(normalise_pointer(&body, "/missing", Task::Regression, None).is_err());
    }

    #[test]
    fn translation_round_trips_tabular_rows() {
        let rows = vec![vec![1.0, 2.0], vec![3.0, 4.0]];
        for wire in [Wire::V1, Wire::V2] {
            assert_eq!(
                request_rows(wire, &rows_to_request(wire, &rows)).unwrap(),
                rows
            );
        }
        let v2 = prediction_response(
            Wire::V2,
            &Prediction::Classes(vec!["1".into()]),
            None,
            "m",
            Some("v1"),
        );
        let v1 =
            translate_response(Wire::V2, Wire::V1, &v2, Task::Classification, None, "m").unwrap();
        assert_eq!(v1, json!({"predictions": [1]}));
    }

    #[test]
    fn a_v2_body_is_checked_in_one_pass_and_each_fault_named() {
        let v2 = |text: &str| JsonBody::validate_v2(bytes::Bytes::from(text.to_string()), None);
        let good = r#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}], "id": "a"}"#;
        assert!(v2(good).is_ok());
        assert!(matches!(
            v2(r#"{"inputs": ["#),
            Err(InvalidBody::NotJson(_))
        ));
        assert!(matches!(v2("garbage"), Err(InvalidBody::NotJson(_))));
        // Bytes that are not UTF-8 (a Latin-1 name) are named with their offset.
        let mut latin1 = good.as_bytes().to_vec();
        let at = good.find(r#""x""#).unwrap() + 1;
        latin1[at] = 0xe9;
        assert_eq!(
            JsonBody::validate_v2(bytes::Bytes::from(latin1), None).err(),
            Some(InvalidBody::NotJson(format!("not UTF-8 at byte {at}")))
        );
        assert!(matches!(
            v2(&format!("{good} x")),
            Err(InvalidBody::NotJson(_))
        ));
        // serde reads a struct from an array too: still not an object.
        assert_eq!(v2("[null]").err(), Some(InvalidBody::NotAnObject));
        assert_eq!(v2("[1, 2]").err(), Some(InvalidBody::NotAnObject));
        assert!(
            matches!(v2(r#"{"inputs": 5}"#), Err(InvalidBody::BadTensor(m)) if m.contains("not an inference request"))
        );
        assert!(matches!(
            v2(r#"{"inputs": []}"#),
            Err(InvalidBody::BadTensor(_))
        ));
    }

    // The scanner's readings against serde's: whatever the scanner takes on, serde's path must
    // read the same way. Documents are put together from pieces, good and bad, then mutated.

    /// Per field of an input, its choices: "" leaves the field out. The good choices come
    /// more than once so that whole good requests are common.
    const INPUT_FIELDS: [&[&str]; 6] = [
        &[
            r#""name": "input""#,
            r#""name": "input""#,
            "",
            r#""name":"""#,
            r#""name": 5"#,
            r#""name": "in\"put""#,
        ],
        &[
            r#""shape": [1, 8]"#,
            r#""shape": [2,4]"#,
            r#""shape": [8]"#,
            "",
            r#""shape": [-1, 8]"#,
            r#""shape": [1.0, 8]"#,
            r#""shape": null"#,
            r#""shape": [4]"#,
        ],
        &[
            r#""datatype": "FP32""#,
            r#""datatype": "INT64""#,
            r#""datatype": "BYTES""#,
            r#""datatype": "BOOL""#,
            "",
            r#""datatype": "FP99""#,
        ],
        &[
            r#""data": [1.01, 49.5, 2.02, 55.0, 3, -4, 1.1e3, 0]"#,
            r#""data": [[1,2,3,4],[5,6,7,8]]"#,
            r#""data": ["a","b","c","d","e","f","g","h"]"#,
            r#""data": [true,false,true,false,true,false,true,false]"#,
            r#""data": [1,2,3,4,5,6,7,null]"#,
            r#""data": [1,2,3,4,5,6,7,{"x":1}]"#,
            r#""data": [1,2,3,"4",5,6,7,8]"#,
            r#""data": [1,2,3,4]"#,
            r#""data": null"#,
            "",
        ],
        &[
            "",
            "",
            r#""parameters": {"content_type": "np"}"#,
            r#""parameters": {"binary_data_size": 32}"#,
            r#""parameters": null"#,
        ],
        &[
            "",
            "",
            r#""id": [1, {"deep": [true]}]"#,
            r#""name": "again""#,
            r#""data": [1]"#,
        ],
    ];

    const TOP_PIECES: [&str; 8] = [
        r#""id": "42""#,
        r#""outputs": [{"name": "label"}]"#,
        r#""outputs": [{"name": "label", "parameters": {"binary_data": true}}]"#,
        r#""outputs": null"#,
        r#""parameters": {"binary_data_output": false}"#,
        r#""parameters": {"trace": 1}"#,
        r#""parameters": 7"#,
        r#""inputs": []"#,
    ];

    fn object_of(pieces: &[&str], space: &str) -> String {
        format!("{{{space}{}{space}}}", pieces.join(&format!(",{space}")))
    }

    fn request_of(inputs: &[[usize; 6]], top: &[usize], space: &str) -> String {
        let inputs: Vec<String> = inputs
            .iter()
            .map(|i| {
                let fields: Vec<&str> = INPUT_FIELDS
                    .iter()
                    .zip(i)
                    .map(|(choices, &k)| choices[k % choices.len()])
                    .filter(|f| !f.is_empty())
                    .collect();
                object_of(&fields, space)
            })
            .collect();
        let inputs = format!(r#""inputs":{space}[{}]"#, inputs.join(","));
        let mut pieces = vec![inputs.as_str()];
        pieces.extend(top.iter().map(|&k| TOP_PIECES[k]));
        object_of(&pieces, space)
    }

    /// A byte of JSON's own alphabet, for mutations.
    const MUTATIONS: &[u8] = b"{}[],:\"\\ 0123456789-+.eEtrufalsn\t\x01x";

    fn mutated(text: &str, at: usize, how: u8, byte: u8) -> String {
        let mut b = text.as_bytes().to_vec();
        let at = at % (b.len() + 1);
        match how % 3 {
            0 => b.insert(at, byte),
            1 if at < b.len() => b[at] = byte,
            _ if at < b.len() => {
                b.remove(at);
            }
            _ => b.push(byte),
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    fn scanner_agrees_on_request(text: &str) -> Result<bool, String> {
        if plain_v2_request(text).is_none() {
            return Ok(false);
        }
        match read_v2(text, None) {
            Ok((None, None)) => Ok(true),
            other => Err(format!("the scanner took {text:?}; serde: {other:?}")),
        }
    }

    #[test]
    fn common_requests_are_read_by_the_scanner() {
        for text in [
            r#"{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1.01,49.5,2.02,55.0,3.0,-4.0,1.1,1003.0]}]}"#,
            "{\n  \"id\": \"7\",\n  \"inputs\": [ {\"name\": \"a\", \"shape\": [2], \"datatype\": \"BYTES\", \"data\": [\"x\", \"y\"]},\n {\"name\": \"b\", \"shape\": [], \"datatype\": \"BOOL\", \"data\": true} ],\n  \"outputs\": [{\"name\": \"label\"}]\n}",
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT64","data":[[1,2],[3,4]],"parameters":{"content_type":"np"}}],"parameters":{"trace":[1]}}"#,
        ] {
            assert_eq!(scanner_agrees_on_request(text), Ok(true), "{text}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn what_the_scanner_takes_of_a_request_serde_reads_alike(
            inputs in proptest::collection::vec(proptest::prelude::any::<[usize; 6]>(), 0..3),
            top in proptest::collection::vec(0..TOP_PIECES.len(), 0..2),
            spaced in proptest::prelude::any::<bool>(),
            mutate in proptest::option::of((0usize..400, 0u8..3, 0..MUTATIONS.len())),
        ) {
            let mut text = request_of(&inputs, &top, if spaced { " \n" } else { "" });
            if let Some((at, how, byte)) = mutate {
                text = mutated(&text, at, how, MUTATIONS[byte]);
            }
            proptest::prop_assert!(scanner_agrees_on_request(&text).is_ok(), "{:?}", scanner_agrees_on_request(&text));
        }
    }

    const OUTPUT_PIECES: [&str; 22] = [
        r#""name": "label""#,
        r#""name": "probabilities""#,
        r#""name": "variable""#,
        r#""name": null"#,
        r#""name": 3"#,
        r#""shape": [1]"#,
        r#""shape": [2, 2]"#,
        r#""shape": [1, 2]"#,
        r#""shape": [1.5]"#,
        r#""shape": null"#,
        r#""datatype": "INT64""#,
        r#""data": [1]"#,
        r#""data": [0.25, 0.75, 0.5, 0.5]"#,
        r#""data": [[0.1, 0.9]]"#,
        r#""data": ["cat", "dog"]"#,
        r#""data": [true, null]"#,
        r#""data": [{"label": 1}]"#,
        r#""data": [-0, 1e2, 18446744073709551615, -3]"#,
        r#""data": [1e400]"#,
        r#""data": 5"#,
        r#""data": []"#,
        r#""parameters": {"content_type": "str"}"#,
    ];

    fn answer_of(outputs: &[Vec<usize>], space: &str) -> String {
        let outputs: Vec<String> = outputs
            .iter()
            .map(|o| {
                object_of(
                    &o.iter().map(|&k| OUTPUT_PIECES[k]).collect::<Vec<_>>(),
                    space,
                )
            })
            .collect();
        let outputs = format!(r#""outputs":{space}[{}]"#, outputs.join(","));
        object_of(
            &[r#""model_name": "m""#, outputs.as_str(), r#""id": "1""#],
            space,
        )
    }

    /// The rows read_answer's typed path reads, when it reads any.
    fn typed_rows(text: &str, task: Task) -> Option<Result<Vec<Value>, BadResponse>> {
        let answer: V2Answer = serde_json::from_str(text).ok()?;
        let chosen = choose_output(&answer.outputs, task, |o| o.name.as_deref())?;
        Some(rows_of(&chosen.data, &chosen.shape))
    }

    fn scanner_agrees_on_answer(text: &str) -> Result<bool, String> {
        for task in [Task::Classification, Task::Regression] {
            let Some(rows) = v2_answer_rows(text, task) else {
                continue;
            };
            match typed_rows(text, task) {
                Some(Ok(typed)) if typed == rows => {}
                other => {
                    return Err(format!(
                        "{task:?}: the scanner read {rows:?} of {text:?}; serde: {other:?}"
                    ))
                }
            }
        }
        Ok(v2_answer_rows(text, Task::Classification).is_some())
    }

    #[test]
    fn common_answers_are_read_by_the_scanner() {
        for (text, task, want) in [
            (
                r#"{"model_name":"mock","model_version":"1","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[1]}]}"#,
                Task::Classification,
                vec![json!(1)],
            ),
            (
                r#"{"outputs":[{"name":"label","shape":[2],"datatype":"BYTES","data":["a","b"]},{"name":"probabilities","shape":[2,2],"datatype":"FP32","data":[0.25,0.75,0.5,0.5]}]}"#,
                Task::Classification,
                vec![json!([0.25, 0.75]), json!([0.5, 0.5])],
            ),
            (
                r#"{ "outputs" : [ { "name" : "variable" , "shape" : [ 2 , 1 ] , "data" : [ [ 1.5 ] , [ -2.5e-1 ] ] } ] }"#,
                Task::Regression,
                vec![json!(1.5), json!(-0.25)],
            ),
        ] {
            assert_eq!(v2_answer_rows(text, task), Some(want), "{text}");
            assert_eq!(scanner_agrees_on_answer(text), Ok(true), "{text}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn what_the_scanner_reads_of_an_answer_serde_reads_alike(
            outputs in proptest::collection::vec(
                proptest::collection::vec(0..OUTPUT_PIECES.len(), 0..5), 0..3),
            spaced in proptest::prelude::any::<bool>(),
            mutate in proptest::option::of((0usize..300, 0u8..3, 0..MUTATIONS.len())),
        ) {
            let mut text = answer_of(&outputs, if spaced { " \t" } else { "" });
            if let Some((at, how, byte)) = mutate {
                text = mutated(&text, at, how, MUTATIONS[byte]);
            }
            proptest::prop_assert!(scanner_agrees_on_answer(&text).is_ok(), "{:?}", scanner_agrees_on_answer(&text));
        }
    }
}
