//! Payload text: the `json` strategy, written the way Python's `json.dumps` writes it, and
//! [`encode_as`]/[`decode_as`] for either strategy (`pickle` lives in [`crate::pickle`]).
//!
//! Academy puts encoded payloads (`pargs`, `kargs`, results, exceptions) into messages as
//! *strings*. Peers compare and decode those strings, so we keep them as received and only
//! decode on demand; when we encode, we match Python's default formatting (`", "` and `": "`
//! separators, non-ASCII escaped as `\uXXXX`) so Python peers see familiar bytes.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::ser::Formatter;

use crate::error::{Error, Result};
use crate::message::Strategy;
use crate::pickle;

/// Encodes a value as JSON text with Python's default `json.dumps` formatting.
///
/// # Errors
/// [`Error::Codec`] if the value cannot be represented as JSON (for example a map with
/// non-string keys, or a non-finite float).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let mut out = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser).map_err(|e| Error::codec(format!("cannot encode payload as JSON: {e}")))?;
    // The formatter only writes ASCII.
    String::from_utf8(out).map_err(|e| Error::codec(e.to_string()))
}

/// Decodes JSON payload text into a value.
///
/// # Errors
/// [`Error::Codec`] naming what was wrong. Python's `NaN`/`Infinity` literals are not JSON
/// and are reported as such.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let hint = if text.contains("NaN") || text.contains("Infinity") {
            " (Python's NaN/Infinity literals are not supported)"
        } else {
            ""
        };
        Error::codec(format!("cannot decode JSON payload: {e}{hint}"))
    })
}

/// Encodes a value with `strategy`.
///
/// # Errors
/// [`Error::Codec`] if the value cannot be represented in that strategy.
pub fn encode_as<T: Serialize + ?Sized>(strategy: Strategy, value: &T) -> Result<String> {
    match strategy {
        Strategy::Json => encode(value),
        Strategy::Pickle => pickle::encode(value),
    }
}

/// Decodes payload text written with `strategy`.
///
/// # Errors
/// [`Error::Codec`] naming what was wrong.
pub fn decode_as<T: DeserializeOwned>(strategy: Strategy, text: &str) -> Result<T> {
    match strategy {
        Strategy::Json => decode(text),
        Strategy::Pickle => pickle::decode(text),
    }
}

/// `serde_json` formatter that reproduces Python's `json.dumps` defaults.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if fragment.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if (' '..'\x7f').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_formatting() {
        let value = json!(["h\u{e9}llo", [1, 2.5, null, true], {"k": "v"}]);
        assert_eq!(encode(&value).unwrap(), r#"["h\u00e9llo", [1, 2.5, null, true], {"k": "v"}]"#);
        assert_eq!(encode(&json!({"nested": {"a": [1, 2]}})).unwrap(), r#"{"nested": {"a": [1, 2]}}"#);
        assert_eq!(encode(&json!("\u{1F600}\n\x7f")).unwrap(), r#""\ud83d\ude00\n\u007f""#);
        assert_eq!(encode(&json!([])).unwrap(), "[]");
        assert_eq!(encode(&json!({})).unwrap(), "{}");
    }

    #[test]
    fn decodes_and_reports_nan() {
        let v: Vec<f64> = decode("[1, 2.5]").unwrap();
        assert_eq!(v, vec![1.0, 2.5]);
        let err = decode::<Vec<f64>>("[NaN]").unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        assert_eq!(encode(&f64::NAN).unwrap(), "null", "never a bare NaN literal");
    }
}
