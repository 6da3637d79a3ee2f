//! [`PyValue`]: the Python values a pickle payload may carry, and their Python `repr`.

use std::fmt;

use num_bigint::BigInt;

/// One of Python's basic values, as decoded from a pickle (or to be pickled).
///
/// Holding the Python type exactly (tuple vs list, set vs list, bytes vs str, ints of any size)
/// lets an action that takes and returns a `PyValue` hand a Python caller back what it sent.
/// The decoder writes integers that fit in 64 bits as [`PyValue::Int`], larger ones as
/// [`PyValue::BigInt`]; dicts keep their insertion order.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` that fits in 64 bits.
    Int(i64),
    /// `int` beyond 64 bits.
    BigInt(BigInt),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `bytearray`.
    ByteArray(Vec<u8>),
    /// `list`.
    List(Vec<PyValue>),
    /// `tuple`.
    Tuple(Vec<PyValue>),
    /// `dict`, in insertion order.
    Dict(Vec<(PyValue, PyValue)>),
    /// `set`, in pickled order.
    Set(Vec<PyValue>),
    /// `frozenset`, in pickled order.
    FrozenSet(Vec<PyValue>),
}

impl PyValue {
    /// An `int` in its canonical form ([`PyValue::Int`] when it fits in 64 bits).
    pub fn int(value: BigInt) -> PyValue {
        match i64::try_from(&value) {
            Ok(small) => PyValue::Int(small),
            Err(_) => PyValue::BigInt(value),
        }
    }

    /// The Python type name (`"tuple"`, `"int"`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) | PyValue::BigInt(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::ByteArray(_) => "bytearray",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Set(_) => "set",
            PyValue::FrozenSet(_) => "frozenset",
        }
    }
}

/// Python's `repr` of the value (e.g. `(1, 'a')`, `{'k': b'\x00'}`, `frozenset({1})`).
impl fmt::Display for PyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PyValue::None => f.write_str("None"),
            PyValue::Bool(true) => f.write_str("True"),
            PyValue::Bool(false) => f.write_str("False"),
            PyValue::Int(i) => write!(f, "{i}"),
            PyValue::BigInt(i) => write!(f, "{i}"),
            PyValue::Float(x) => write_float(f, *x),
            PyValue::Str(s) => write_str_repr(f, s),
            PyValue::Bytes(b) => write_bytes_repr(f, b),
            PyValue::ByteArray(b) => {
                f.write_str("bytearray(")?;
                write_bytes_repr(f, b)?;
                f.write_str(")")
            }
            PyValue::List(items) => write_items(f, "[", items, "]"),
            PyValue::Tuple(items) if items.len() == 1 => write!(f, "({},)", items[0]),
            PyValue::Tuple(items) => write_items(f, "(", items, ")"),
            PyValue::Dict(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            PyValue::Set(items) if items.is_empty() => f.write_str("set()"),
            PyValue::Set(items) => write_items(f, "{", items, "}"),
            PyValue::FrozenSet(items) if items.is_empty() => f.write_str("frozenset()"),
            PyValue::FrozenSet(items) => write_items(f, "frozenset({", items, "})"),
        }
    }
}

fn write_items(f: &mut fmt::Formatter<'_>, open: &str, items: &[PyValue], close: &str) -> fmt::Result {
    f.write_str(open)?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(close)
}

fn write_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("nan")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "inf" } else { "-inf" })
    } else if x == x.trunc() && x.abs() < 1e16 {
        write!(f, "{x:.1}")
    } else {
        // Rust's shortest round-trip digits; Python switches to exponent form at 1e16 and 1e-4.
        let text = format!("{x:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        if (-4..16).contains(&exponent) {
            write!(f, "{x}")
        } else {
            write!(f, "{mantissa}e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs())
        }
    }
}

fn write_str_repr(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    write!(f, "{quote}")?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c == quote => write!(f, "\\{c}")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "{quote}")
}

fn write_bytes_repr(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') { b'"' } else { b'\'' };
    write!(f, "b{}", quote as char)?;
    for &b in bytes {
        match b {
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            b'\t' => f.write_str("\\t")?,
            b if b == quote => write!(f, "\\{}", b as char)?,
            0x20..0x7f => write!(f, "{}", b as char)?,
            b => write!(f, "\\x{b:02x}")?,
        }
    }
    write!(f, "{}", quote as char)
}
