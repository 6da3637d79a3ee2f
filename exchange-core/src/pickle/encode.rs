//! Writes [`PyValue`]s and builtin exceptions as protocol 4 pickles (Python 3.4 and later).

use num_bigint::BigInt;

use super::value::PyValue;

/// Builtin exception classes an error text may name (`"TypeError: ..."`); others are raised
/// as `Exception`.
const BUILTIN_EXCEPTIONS: &[&str] = &[
    "AttributeError",
    "IndexError",
    "KeyError",
    "LookupError",
    "NotImplementedError",
    "OverflowError",
    "PermissionError",
    "RuntimeError",
    "TimeoutError",
    "TypeError",
    "ValueError",
    "ZeroDivisionError",
];

/// The pickle of `value`.
pub(super) fn encode(value: &PyValue) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    write(&mut out, value);
    out.push(b'.');
    out
}

/// The pickle of a builtin exception carrying `text`: `TypeError(rest)` when `text` reads
/// `"TypeError: rest"` (for the builtin classes Python callers commonly catch), else
/// `Exception(text)`.
pub(super) fn encode_exception(text: &str) -> Vec<u8> {
    let (class, message) = match text.split_once(": ") {
        Some((class, rest)) if BUILTIN_EXCEPTIONS.contains(&class) => (class, rest),
        _ => ("Exception", text),
    };
    let mut out = vec![0x80, 4];
    write_global(&mut out, "builtins", class);
    write_str(&mut out, message);
    out.extend_from_slice(&[0x85, b'R', b'.']);
    out
}

fn write_global(out: &mut Vec<u8>, module: &str, name: &str) {
    write_str(out, module);
    write_str(out, name);
    out.push(0x93);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    write_sized(out, s.as_bytes(), [0x8c, b'X', 0x8d]);
}

/// Writes `bytes` with the short (1-byte length), 4-byte or 8-byte length opcode.
fn write_sized(out: &mut Vec<u8>, bytes: &[u8], ops: [u8; 3]) {
    let len = bytes.len();
    if let Ok(n) = u8::try_from(len) {
        out.extend_from_slice(&[ops[0], n]);
    } else if let Ok(n) = u32::try_from(len) {
        out.push(ops[1]);
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(ops[2]);
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

fn write_big(out: &mut Vec<u8>, value: &BigInt) {
    let bytes = value.to_signed_bytes_le();
    match u8::try_from(bytes.len()) {
        Ok(n) => out.extend_from_slice(&[0x8a, n]),
        Err(_) => {
            out.push(0x8b);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        }
    }
    out.extend_from_slice(&bytes);
}

fn write_all(out: &mut Vec<u8>, items: &[PyValue]) {
    for item in items {
        write(out, item);
    }
}

fn write(out: &mut Vec<u8>, value: &PyValue) {
    match value {
        PyValue::None => out.push(b'N'),
        PyValue::Bool(true) => out.push(0x88),
        PyValue::Bool(false) => out.push(0x89),
        PyValue::Int(i) => match (u8::try_from(*i), u16::try_from(*i), i32::try_from(*i)) {
            (Ok(n), _, _) => out.extend_from_slice(&[b'K', n]),
            (_, Ok(n), _) => {
                out.push(b'M');
                out.extend_from_slice(&n.to_le_bytes());
            }
            (_, _, Ok(n)) => {
                out.push(b'J');
                out.extend_from_slice(&n.to_le_bytes());
            }
            _ => write_big(out, &BigInt::from(*i)),
        },
        PyValue::BigInt(i) => write_big(out, i),
        PyValue::Float(x) => {
            out.push(b'G');
            out.extend_from_slice(&x.to_be_bytes());
        }
        PyValue::Str(s) => write_str(out, s),
        PyValue::Bytes(b) => write_sized(out, b, [b'C', b'B', 0x8e]),
        PyValue::ByteArray(b) => {
            write_global(out, "builtins", "bytearray");
            write_sized(out, b, [b'C', b'B', 0x8e]);
            out.extend_from_slice(&[0x85, b'R']);
        }
        PyValue::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                write_all(out, items);
                out.push(b'e');
            }
        }
        PyValue::Tuple(items) => match items.len() {
            0 => out.push(b')'),
            n @ 1..=3 => {
                write_all(out, items);
                out.push(0x84 + n as u8);
            }
            _ => {
                out.push(b'(');
                write_all(out, items);
                out.push(b't');
            }
        },
        PyValue::Dict(pairs) => {
            out.push(b'}');
            if !pairs.is_empty() {
                out.push(b'(');
                for (k, v) in pairs {
                    write(out, k);
                    write(out, v);
                }
                out.push(b'u');
            }
        }
        PyValue::Set(items) => {
            out.push(0x8f);
            if !items.is_empty() {
                out.push(b'(');
                write_all(out, items);
                out.push(0x90);
            }
        }
        PyValue::FrozenSet(items) => {
            out.push(b'(');
            write_all(out, items);
            out.push(0x91);
        }
    }
}
