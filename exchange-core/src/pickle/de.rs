//! A [`PyValue`] into any `Deserialize` type, and [`PyValue`]'s own `Deserialize`.
//!
//! Tuples, lists, sets and frozensets read as sequences, dicts as maps (and structs), `None`
//! as unit or `Option::None`, `bytes` as byte buffers when asked for (else sequences of ints), a `str` as a
//! unit enum variant and a one-entry dict as any other variant. Ints beyond 64 bits read
//! only into `i128`/`u128` (or a `PyValue`); other targets get an error naming the number.
//! Deserializing a `PyValue` from a `PyValue` is exact (it passes through a pickle).

use std::fmt;

use num_bigint::BigInt;
use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, Visitor};

use super::decode::decode;
use super::encode::encode;
use super::ser::ValueError;
use super::value::PyValue;

/// Marks the request for an exact `PyValue` (answered with its pickle by this module).
const PYVALUE: &str = "$exchange::pickle::PyValue";

/// `value` as a `T`.
pub(super) fn from_value<T: de::DeserializeOwned>(value: PyValue) -> Result<T, ValueError> {
    T::deserialize(Reader(value))
}

/// A `PyValue` being read by serde.
struct Reader(PyValue);

impl<'de> IntoDeserializer<'de, ValueError> for Reader {
    type Deserializer = Reader;

    fn into_deserializer(self) -> Reader {
        self
    }
}

fn visit_seq<'de, V: Visitor<'de>>(items: Vec<PyValue>, visitor: V) -> Result<V::Value, ValueError> {
    let mut seq = SeqDeserializer::new(items.into_iter().map(Reader));
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

/// Bytes offered to a target that did not ask for bytes: a sequence of ints (what json
/// writes for them too).
fn visit_byte_seq<'de, V: Visitor<'de>>(bytes: Vec<u8>, visitor: V) -> Result<V::Value, ValueError> {
    visit_seq(bytes.into_iter().map(|byte| PyValue::Int(byte.into())).collect(), visitor)
}

fn visit_int<'de, V: Visitor<'de>>(i: BigInt, visitor: V) -> Result<V::Value, ValueError> {
    if let Ok(small) = i64::try_from(&i) {
        visitor.visit_i64(small)
    } else if let Ok(small) = u64::try_from(&i) {
        visitor.visit_u64(small)
    } else if let Ok(small) = i128::try_from(&i) {
        visitor.visit_i128(small)
    } else if let Ok(small) = u128::try_from(&i) {
        visitor.visit_u128(small)
    } else if i.bits() <= 512 {
        Err(ValueError(format!("the integer {i} does not fit in 128 bits")))
    } else {
        Err(ValueError(format!("an integer of {} bits does not fit in 128 bits", i.bits())))
    }
}

impl<'de> Deserializer<'de> for Reader {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            PyValue::None => visitor.visit_unit(),
            PyValue::Bool(b) => visitor.visit_bool(b),
            PyValue::Int(i) => visitor.visit_i64(i),
            PyValue::BigInt(i) => visit_int(i, visitor),
            PyValue::Float(x) => visitor.visit_f64(x),
            PyValue::Str(s) => visitor.visit_string(s),
            PyValue::Bytes(b) | PyValue::ByteArray(b) => visit_byte_seq(b, visitor),
            PyValue::List(items) | PyValue::Tuple(items) | PyValue::Set(items) | PyValue::FrozenSet(items) => {
                visit_seq(items, visitor)
            }
            PyValue::Dict(pairs) => {
                let mut map = MapDeserializer::new(pairs.into_iter().map(|(k, v)| (Reader(k), Reader(v))));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            PyValue::None => visitor.visit_none(),
            other => visitor.visit_some(Reader(other)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            PyValue::None => visitor.visit_unit(),
            PyValue::Tuple(items) | PyValue::List(items) if items.is_empty() => visitor.visit_unit(),
            other => Err(ValueError(format!("expected None, got a {}", other.type_name()))),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            PyValue::Bytes(b) | PyValue::ByteArray(b) => visitor.visit_byte_buf(b),
            other => Reader(other).deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        if name == PYVALUE { visitor.visit_byte_buf(encode(&self.0)) } else { visitor.visit_newtype_struct(self) }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            PyValue::Str(variant) => visitor.visit_enum(variant.into_deserializer()),
            PyValue::Dict(pairs) if pairs.len() == 1 => visitor.visit_enum(MapAccessDeserializer::new(
                MapDeserializer::new(pairs.into_iter().map(|(k, v)| (Reader(k), Reader(v)))),
            )),
            other => Err(ValueError(format!("expected an enum variant name, got a {}", other.type_name()))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string seq
        unit_struct map struct identifier ignored_any
    }
}

/// Builds a `PyValue` from whatever a deserializer offers; `exact` accepts the pickle this
/// module answers [`PYVALUE`] requests with.
struct PyValueVisitor {
    exact: bool,
}

impl<'de> Visitor<'de> for PyValueVisitor {
    type Value = PyValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Python basic value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<PyValue, E> {
        Ok(PyValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PyValue, E> {
        Ok(PyValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PyValue, E> {
        Ok(PyValue::int(BigInt::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<PyValue, E> {
        Ok(PyValue::int(BigInt::from(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<PyValue, E> {
        Ok(PyValue::int(BigInt::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PyValue, E> {
        Ok(PyValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PyValue, E> {
        Ok(PyValue::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<PyValue, E> {
        Ok(PyValue::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PyValue, E> {
        self.visit_byte_buf(v.to_vec())
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<PyValue, E> {
        if self.exact { decode(&v).map_err(|e| E::custom(e.0)) } else { Ok(PyValue::Bytes(v)) }
    }
    fn visit_none<E: de::Error>(self) -> Result<PyValue, E> {
        Ok(PyValue::None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<PyValue, E> {
        Ok(PyValue::None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<PyValue, D::Error> {
        PyValue::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<PyValue, D::Error> {
        d.deserialize_any(PyValueVisitor { exact: false })
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<PyValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(PyValue::List(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<PyValue, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(pair) = map.next_entry()? {
            pairs.push(pair);
        }
        Ok(PyValue::Dict(pairs))
    }
}

impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PyValue, D::Error> {
        d.deserialize_newtype_struct(PYVALUE, PyValueVisitor { exact: true })
    }
}
