//! Raw tensor bytes of the Open Inference Protocol: the binary tensor data extension of REST
//! (`Inference-Header-Content-Length`, `binary_data_size`) and gRPC's `raw_input_contents` /
//! `raw_output_contents` share one layout: elements little-endian in row-major order, a `BOOL`
//! one byte, `BYTES` elements each a 4-byte little-endian length followed by that many bytes.
//!
//! This module converts between that layout and JSON `data` arrays; nothing here does I/O.

use serde_json::{json, Value};

/// The size of one element of `datatype`, or `None` for `BYTES` (variable) and unknown types.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Why raw bytes do not hold the tensor they are said to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RawError(pub String);

/// Checks that `raw` holds exactly `elements` elements of `datatype`.
pub fn check(datatype: &str, raw: &[u8], elements: u64) -> Result<(), RawError> {
    match element_size(datatype) {
        Some(size) => {
            let wanted = elements.saturating_mul(size as u64);
            if raw.len() as u64 != wanted {
                return Err(RawError(format!(
                    "{} bytes do not hold {elements} {datatype} elements ({wanted} bytes)",
                    raw.len()
                )));
            }
            Ok(())
        }
        None if datatype == "BYTES" => {
            let found = bytes_elements(raw)?;
            if found != elements {
                return Err(RawError(format!(
                    "{} bytes hold {found} BYTES elements, the shape needs {elements}",
                    raw.len()
                )));
            }
            Ok(())
        }
        None => Err(RawError(format!("unknown datatype '{datatype}'"))),
    }
}

/// The elements of a raw `BYTES` tensor.
fn bytes_items(raw: &[u8]) -> impl Iterator<Item = Result<&[u8], RawError>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= raw.len() {
            return None;
        }
        let Some(prefix) = raw.get(at..at + 4) else {
            at = raw.len();
            return Some(Err(RawError(
                "a BYTES element's 4-byte length prefix is cut short".into(),
            )));
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let start = at + 4;
        match raw.get(start..start.saturating_add(len)) {
            Some(item) => {
                at = start + len;
                Some(Ok(item))
            }
            None => {
                at = raw.len();
                Some(Err(RawError(format!(
                    "a BYTES element of {len} bytes runs past the end of its {} bytes",
                    raw.len()
                ))))
            }
        }
    })
}

fn bytes_elements(raw: &[u8]) -> Result<u64, RawError> {
    let mut n = 0;
    for item in bytes_items(raw) {
        item?;
        n += 1;
    }
    Ok(n)
}

/// Half precision to single (IEEE 754 binary16).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f32::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Single precision to half, rounding to nearest (overflow to infinity).
fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return sign | 0x7e00;
    }
    let a = x.abs();
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 2f32.powi(-14) {
        // Subnormal: a multiple of 2^-24.
        return sign | (a * 2f32.powi(24)).round() as u16;
    }
    let exp = ((bits >> 23) & 0xff) as i32 - 127;
    let mantissa = (a / 2f32.powi(exp) - 1.0) * 1024.0;
    let mut m = mantissa.round() as u32;
    let mut e = (exp + 15) as u32;
    if m == 1024 {
        m = 0;
        e += 1;
    }
    sign | ((e << 10) as u16) | m as u16
}

macro_rules! le {
    ($t:ty, $chunk:expr) => {
        <$t>::from_le_bytes($chunk.try_into().unwrap_or_default())
    };
}

/// The elements of a raw tensor as JSON values (numbers, booleans, or strings for `BYTES`;
/// a `BYTES` element that is not UTF-8 is read lossily). `raw` must have passed [`check`].
pub fn to_json(datatype: &str, raw: &[u8]) -> Result<Vec<Value>, RawError> {
    if datatype == "BYTES" {
        return bytes_items(raw)
            .map(|item| item.map(|b| Value::String(String::from_utf8_lossy(b).into_owned())))
            .collect();
    }
    let size =
        element_size(datatype).ok_or_else(|| RawError(format!("unknown datatype '{datatype}'")))?;
    Ok(raw
        .chunks_exact(size)
        .map(|c| match datatype {
            "BOOL" => Value::Bool(c[0] != 0),
            "UINT8" => json!(c[0]),
            "INT8" => json!(c[0] as i8),
            "UINT16" => json!(le!(u16, c)),
            "INT16" => json!(le!(i16, c)),
            "UINT32" => json!(le!(u32, c)),
            "INT32" => json!(le!(i32, c)),
            "UINT64" => json!(le!(u64, c)),
            "INT64" => json!(le!(i64, c)),
            "FP16" => json!(f16_to_f32(le!(u16, c))),
            "FP32" => json!(le!(f32, c)),
            _ => json!(le!(f64, c)),
        })
        .collect())
}

/// The elements of a raw numeric (or `BOOL`) tensor as `f32`. `raw` must have passed [`check`].
pub fn to_f32(datatype: &str, raw: &[u8]) -> Result<Vec<f32>, RawError> {
    let size = element_size(datatype)
        .ok_or_else(|| RawError(format!("{datatype} data are not numbers")))?;
    Ok(raw
        .chunks_exact(size)
        .map(|c| match datatype {
            "BOOL" | "UINT8" => f32::from(c[0]),
            "INT8" => f32::from(c[0] as i8),
            "UINT16" => f32::from(le!(u16, c)),
            "INT16" => f32::from(le!(i16, c)),
            "UINT32" => le!(u32, c) as f32,
            "INT32" => le!(i32, c) as f32,
            "UINT64" => le!(u64, c) as f32,
            "INT64" => le!(i64, c) as f32,
            "FP16" => f16_to_f32(le!(u16, c)),
            "FP32" => le!(f32, c),
            _ => le!(f64, c) as f32,
        })
        .collect())
}

/// Flattens nested JSON `data` into its leaves.
pub fn leaves(data: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other),
        }
    }
    let mut out = Vec::new();
    walk(data, &mut out);
    out
}

/// Encodes JSON `data` (flat or nested) as raw bytes of `datatype`.
pub fn from_json(datatype: &str, data: &Value) -> Result<Vec<u8>, RawError> {
    let items = leaves(data);
    let mut out = Vec::with_capacity(items.len() * element_size(datatype).unwrap_or(8));
    for item in items {
        let bad = || RawError(format!("{item} is not a {datatype} value"));
        let number = || match item {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            v => v.as_f64(),
        };
        let int = || match item {
            Value::Bool(b) => Some(i64::from(*b)),
            v => v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            }),
        };
        match datatype {
            "BYTES" => {
                let s = match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            "BOOL" => out.push(match item {
                Value::Bool(b) => u8::from(*b),
                v => u8::from(v.as_f64().ok_or_else(bad)? != 0.0),
            }),
            "UINT8" => out.push(int().ok_or_else(bad)? as u8),
            "INT8" => out.push(int().ok_or_else(bad)? as i8 as u8),
            "UINT16" => out.extend_from_slice(&(int().ok_or_else(bad)? as u16).to_le_bytes()),
            "INT16" => out.extend_from_slice(&(int().ok_or_else(bad)? as i16).to_le_bytes()),
            "UINT32" => out.extend_from_slice(&(int().ok_or_else(bad)? as u32).to_le_bytes()),
            "INT32" => out.extend_from_slice(&(int().ok_or_else(bad)? as i32).to_le_bytes()),
            "UINT64" => out.extend_from_slice(
                &(item.as_u64().or_else(|| int().map(|i| i as u64)))
                    .ok_or_else(bad)?
                    .to_le_bytes(),
            ),
            "INT64" => out.extend_from_slice(&int().ok_or_else(bad)?.to_le_bytes()),
            "FP16" => {
                out.extend_from_slice(&f32_to_f16(number().ok_or_else(bad)? as f32).to_le_bytes())
            }
            "FP32" => out.extend_from_slice(&(number().ok_or_else(bad)? as f32).to_le_bytes()),
            "FP64" => out.extend_from_slice(&number().ok_or_else(bad)?.to_le_bytes()),
            other => return Err(RawError(format!("unknown datatype '{other}'"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips_through_raw_bytes() {
        let cases = [
            ("BOOL", json!([true, false, true])),
            ("UINT8", json!([0, 7, 255])),
            ("INT8", json!([-128, 0, 127])),
            ("UINT16", json!([0, 65535])),
            ("INT16", json!([-32768, 32767])),
            ("UINT32", json!([0, 4294967295u64])),
            ("INT32", json!([-2147483648i64, 5])),
            ("UINT64", json!([0, 18446744073709551615u64])),
            (
                "INT64",
                json!([-9223372036854775808i64, 9223372036854775807i64]),
            ),
            ("FP16", json!([0.0, -2.5, 1024.0, 0.5])),
            ("FP32", json!([1.5, -0.25, 3.0e10])),
            ("FP64", json!([0.1, -1.0e300])),
            ("BYTES", json!(["", "héllo", "a"])),
        ];
        for (datatype, data) in cases {
            let raw = from_json(datatype, &data).unwrap();
            let n = data.as_array().unwrap().len() as u64;
            check(datatype, &raw, n).unwrap();
            assert!(check(datatype, &raw, n + 1).is_err(), "{datatype}");
            let back = to_json(datatype, &raw).unwrap();
            let back_f = back.iter().map(|v| v.as_f64());
            let want_f = data.as_array().unwrap().iter().map(|v| v.as_f64());
            if datatype == "FP32" {
                assert!(back_f
                    .zip(want_f)
                    .all(|(a, b)| (a.unwrap() - b.unwrap()).abs() <= b.unwrap().abs() * 1e-7));
            } else {
                assert_eq!(Value::Array(back), data, "{datatype}");
            }
        }
    }

    #[test]
    fn bytes_tensors_are_walked_by_their_length_prefixes() {
        let raw = from_json("BYTES", &json!(["ab", "c"])).unwrap();
        assert_eq!(raw, b"\x02\0\0\0ab\x01\0\0\0c");
        assert!(check("BYTES", &raw[..raw.len() - 1], 2)
            .unwrap_err()
            .0
            .contains("runs past the end"));
        assert!(check("BYTES", &raw[..8], 2)
            .unwrap_err()
            .0
            .contains("cut short"));
        assert!(check("BYTES", &raw, 3)
            .unwrap_err()
            .0
            .contains("hold 2 BYTES"));
        assert_eq!(
            to_f32(
                "FP64",
                &from_json("FP64", &json!([[1, 2], [3, 4]])).unwrap()
            )
            .unwrap(),
            vec![1.0, 2.0, 3.0, 4.0]
        );
        assert!(to_f32("BYTES", &raw).is_err());
        assert!(from_json("INT32", &json!(["x"])).is_err());
    }
}
