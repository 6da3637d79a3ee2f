//! Any `Serialize` type into a [`PyValue`], and [`PyValue`]'s own `Serialize`.
//!
//! Rust types map the way Python code expects: tuples to `tuple`, sequences to `list`, maps
//! and structs to `dict`, `()` and `None` to `None`, byte buffers to `bytes`, unit enum
//! variants to their name, other variants to `{name: value}` (as serde_json writes them).
//! A `PyValue` serializes to itself through newtype markers that other serializers ignore:
//! in JSON a set is an array, bytes an array of ints, and an int beyond 128 bits its
//! decimal string.

use std::fmt;

use num_bigint::BigInt;
use serde::ser::{self, Serialize, SerializeMap as _, SerializeSeq as _, SerializeTuple as _};

use super::value::PyValue;

pub(super) const SET: &str = "$exchange::pickle::set";
pub(super) const FROZENSET: &str = "$exchange::pickle::frozenset";
pub(super) const BYTEARRAY: &str = "$exchange::pickle::bytearray";
pub(super) const BIGINT: &str = "$exchange::pickle::bigint";

/// Why a value could not be converted.
#[derive(Debug)]
pub(super) struct ValueError(pub(super) String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

impl ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}

impl serde::de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}

/// `value` as a [`PyValue`].
pub(super) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<PyValue, ValueError> {
    value.serialize(ValueSerializer)
}

struct Items<'a>(&'a [PyValue]);

impl Serialize for Items<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for PyValue {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PyValue::None => s.serialize_unit(),
            PyValue::Bool(b) => s.serialize_bool(*b),
            PyValue::Int(i) => s.serialize_i64(*i),
            PyValue::BigInt(i) => {
                if let Ok(small) = i128::try_from(i) {
                    s.serialize_i128(small)
                } else if let Ok(small) = u128::try_from(i) {
                    s.serialize_u128(small)
                } else {
                    s.serialize_newtype_struct(BIGINT, &i.to_string())
                }
            }
            PyValue::Float(x) => s.serialize_f64(*x),
            PyValue::Str(text) => s.serialize_str(text),
            PyValue::Bytes(b) => s.serialize_bytes(b),
            PyValue::ByteArray(b) => s.serialize_newtype_struct(BYTEARRAY, &Bytes(b)),
            PyValue::List(items) => Items(items).serialize(s),
            PyValue::Tuple(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                for item in items {
                    tuple.serialize_element(item)?;
                }
                tuple.end()
            }
            PyValue::Dict(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            PyValue::Set(items) => s.serialize_newtype_struct(SET, &Items(items)),
            PyValue::FrozenSet(items) => s.serialize_newtype_struct(FROZENSET, &Items(items)),
        }
    }
}

struct ValueSerializer;

/// Collects the items of a sequence, tuple or struct, then builds the value with `finish`.
struct SeqBuilder {
    items: Vec<PyValue>,
    finish: fn(Vec<PyValue>) -> PyValue,
    /// Enum variant the result is wrapped in (`{variant: value}`).
    variant: Option<&'static str>,
}

impl SeqBuilder {
    fn done(self) -> PyValue {
        wrap(self.variant, (self.finish)(self.items))
    }
}

struct MapBuilder {
    pairs: Vec<(PyValue, PyValue)>,
    key: Option<PyValue>,
    variant: Option<&'static str>,
}

fn wrap(variant: Option<&'static str>, value: PyValue) -> PyValue {
    match variant {
        Some(name) => PyValue::Dict(vec![(PyValue::Str(name.to_owned()), value)]),
        None => value,
    }
}

impl ser::Serializer for ValueSerializer {
    type Ok = PyValue;
    type Error = ValueError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<PyValue, ValueError> {
        Ok(PyValue::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<PyValue, ValueError> {
        Ok(PyValue::int(BigInt::from(v)))
    }
    fn serialize_u8(self, v: u8) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<PyValue, ValueError> {
        Ok(PyValue::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<PyValue, ValueError> {
        Ok(PyValue::int(BigInt::from(v)))
    }
    fn serialize_u128(self, v: u128) -> Result<PyValue, ValueError> {
        Ok(PyValue::int(BigInt::from(v)))
    }
    fn serialize_f32(self, v: f32) -> Result<PyValue, ValueError> {
        Ok(PyValue::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<PyValue, ValueError> {
        Ok(PyValue::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<PyValue, ValueError> {
        Ok(PyValue::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<PyValue, ValueError> {
        Ok(PyValue::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<PyValue, ValueError> {
        Ok(PyValue::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<PyValue, ValueError> {
        Ok(PyValue::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<PyValue, ValueError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<PyValue, ValueError> {
        Ok(PyValue::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<PyValue, ValueError> {
        Ok(PyValue::None)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<PyValue, ValueError> {
        Ok(PyValue::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<PyValue, ValueError> {
        let inner = value.serialize(ValueSerializer)?;
        Ok(match (name, inner) {
            (SET, PyValue::List(items)) => PyValue::Set(items),
            (FROZENSET, PyValue::List(items)) => PyValue::FrozenSet(items),
            (BYTEARRAY, PyValue::Bytes(bytes)) => PyValue::ByteArray(bytes),
            (BIGINT, PyValue::Str(digits)) => match digits.parse::<BigInt>() {
                Ok(i) => PyValue::int(i),
                Err(_) => return Err(ValueError(format!("{digits:?} is not an integer"))),
            },
            (_, inner) => inner,
        })
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<PyValue, ValueError> {
        Ok(wrap(Some(variant), value.serialize(ValueSerializer)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder { items: Vec::with_capacity(len.unwrap_or(0)), finish: PyValue::List, variant: None })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder { items: Vec::with_capacity(len), finish: PyValue::Tuple, variant: None })
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder, ValueError> {
        self.serialize_tuple(len)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder { items: Vec::with_capacity(len), finish: PyValue::Tuple, variant: Some(variant) })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder { pairs: Vec::with_capacity(len.unwrap_or(0)), key: None, variant: None })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<MapBuilder, ValueError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder { pairs: Vec::with_capacity(len), key: None, variant: Some(variant) })
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(self.done())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(self.done())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(self.done())
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(self.done())
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        let Some(key) = self.key.take() else { return Err(ValueError("map value without a key".into())) };
        self.pairs.push((key, value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(wrap(self.variant, PyValue::Dict(self.pairs)))
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), ValueError> {
        self.pairs.push((PyValue::Str(key.to_owned()), value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(wrap(self.variant, PyValue::Dict(self.pairs)))
    }
}

impl ser::SerializeStructVariant for MapBuilder {
    type Ok = PyValue;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), ValueError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<PyValue, ValueError> {
        Ok(wrap(self.variant, PyValue::Dict(self.pairs)))
    }
}
