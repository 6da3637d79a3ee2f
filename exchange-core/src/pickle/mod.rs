//! The `pickle` serialization strategy, Academy's default: payloads are the base64 of
//! `pickle.dumps(...)`.
//!
//! Only Python's basic values are read: `None`, `bool`, `int` (any size), `float`, `str`,
//! `bytes`, `bytearray`, `list`, `tuple`, `dict`, `set` and `frozenset`, from pickles of any
//! protocol (0 to 5). Reading never imports or calls anything; a pickle naming another type
//! is refused with that type's name, and so are values nested deeper than [`MAX_DEPTH`] or
//! expanding past [`MAX_NODES`] items.
//! Values are written as protocol 4 pickles, and errors as builtin exceptions Python raises.
//!
//! Rust values convert through [`PyValue`] with serde: tuples are tuples, sequences lists,
//! maps and structs dicts. An action that takes and returns a `PyValue` gives a Python
//! caller back exactly what it sent.

mod de;
mod decode;
mod encode;
mod ser;
mod value;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use decode::{MAX_DEPTH, MAX_NODES};
pub use value::PyValue;

use crate::error::{Error, Result};

/// `value` as a [`PyValue`].
///
/// # Errors
/// [`Error::Codec`] if the value's `Serialize` fails.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<PyValue> {
    ser::to_value(value).map_err(|e| Error::codec(format!("cannot encode payload as pickle: {e}")))
}

/// A [`PyValue`] as a `T`.
///
/// # Errors
/// [`Error::Codec`] if the value does not fit `T` (naming what was found).
pub fn from_value<T: DeserializeOwned>(value: PyValue) -> Result<T> {
    de::from_value(value).map_err(|e| Error::codec(format!("cannot decode pickle payload: {e}")))
}

/// Encodes a value as a pickle payload (base64 text).
///
/// # Errors
/// [`Error::Codec`] if the value's `Serialize` fails.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    Ok(STANDARD.encode(encode::encode(&to_value(value)?)))
}

/// Decodes a pickle payload (base64 text) of basic values into a `T`.
///
/// # Errors
/// [`Error::Codec`] for bad base64, a malformed or unsupported pickle, a type outside the
/// basic values (named), or a value that does not fit `T`.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T> {
    from_value(decode_value(text)?)
}

/// Decodes a pickle payload (base64 text) into a [`PyValue`].
///
/// # Errors
/// As [`decode`], without the last case.
pub fn decode_value(text: &str) -> Result<PyValue> {
    decode::decode(&bytes(text)?).map_err(|e| Error::codec(format!("cannot decode pickle payload: {}", e.0)))
}

/// The pickle payload of a builtin exception carrying `text`, which Python callers raise:
/// `TypeError(rest)` for `"TypeError: rest"` and the other common builtin classes, else
/// `Exception(text)`.
pub fn encode_exception(text: &str) -> String {
    STANDARD.encode(encode::encode_exception(text))
}

/// The text of a pickled exception (`"ValueError: boom"`), read without evaluating it; the
/// module is named for classes outside `builtins`.
///
/// # Errors
/// [`Error::Codec`] if the payload is not a pickled object built from basic values.
pub fn exception_text(text: &str) -> Result<String> {
    let (class, args) = decode::decode_call(&bytes(text)?)
        .map_err(|e| Error::codec(format!("cannot decode pickled exception: {}", e.0)))?;
    let class = class.strip_prefix("builtins.").unwrap_or(&class);
    let Some(args) = args else { return Ok(class.to_owned()) };
    Ok(match args.as_slice() {
        [] => class.to_owned(),
        [PyValue::Str(message)] => format!("{class}: {message}"),
        [one] => format!("{class}: {one}"),
        many => format!("{class}: {}", PyValue::Tuple(many.to_vec())),
    })
}

fn bytes(text: &str) -> Result<Vec<u8>> {
    STANDARD.decode(text.trim()).map_err(|e| Error::codec(format!("pickle payload is not base64: {e}")))
}
