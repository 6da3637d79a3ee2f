//! The pickle strategy: golden pickles from real Python (protocols 0 to 5), refusals, round
//! trips, and randomized inputs that must never panic.

use std::path::{Path, PathBuf};

use exchange_core::pickle::{self, PyValue};
use exchange_core::{ActionRequest, Body, Error, Message, Strategy, UserError};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[derive(Deserialize)]
struct Case {
    name: String,
    protocol: u8,
    pickle: String,
    repr: String,
}

#[derive(Deserialize)]
struct Refused {
    name: String,
    protocol: u8,
    pickle: String,
    r#type: String,
}

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
    refused: Vec<Refused>,
}

fn golden() -> Golden {
    let path = fixtures().join("pickle/basic.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every basic type in every protocol decodes to the value Python pickled (compared by repr),
/// and re-encodes to a pickle that decodes to the same value.
#[test]
fn golden_pickles_of_every_protocol_decode_exactly() {
    let golden = golden();
    assert!(golden.cases.len() >= 30 * 6, "fixture too small: {}", golden.cases.len());
    for case in &golden.cases {
        let what = format!("{} (protocol {})", case.name, case.protocol);
        let value = pickle::decode_value(&case.pickle).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(value.to_string(), case.repr, "{what}");
        let again = pickle::decode_value(&pickle::encode(&value).unwrap()).unwrap();
        assert_eq!(again, value, "{what}: re-encoded");
    }
    let protocols: std::collections::BTreeSet<u8> = golden.cases.iter().map(|c| c.protocol).collect();
    assert_eq!(protocols.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
}

/// Types outside the basic values are refused, naming the type; nothing is evaluated.
#[test]
fn other_types_are_refused_by_name() {
    let golden = golden();
    assert!(golden.refused.len() >= 12);
    for case in &golden.refused {
        let what = format!("{} (protocol {})", case.name, case.protocol);
        let err = pickle::decode_value(&case.pickle).expect_err(&what);
        assert!(matches!(err, Error::Codec { .. }), "{what}: {err:?}");
        assert!(err.to_string().contains(&case.r#type), "{what}: {err}");
    }
}

#[test]
fn typed_decoding_and_big_ints() {
    let case = |name: &str, protocol: u8| {
        golden().cases.into_iter().find(|c| c.name == name && c.protocol == protocol).unwrap().pickle
    };
    let (a, b): (i64, i64) = pickle::decode(&case("args", 2)).unwrap();
    assert_eq!((a, b), (2, 3));
    let max: u64 = pickle::decode(&case("u64_max", 0)).unwrap();
    assert_eq!(max, u64::MAX);
    let big: i128 = pickle::decode(&case("big_int", 4)).unwrap();
    assert_eq!(big, (1i128 << 100) + 12345);
    let err = pickle::decode::<i64>(&case("big_int", 4)).unwrap_err();
    assert!(err.to_string().contains("1267650600228229401496703217721"), "{err}");
    let err = pickle::decode::<i128>(&case("big_negative_int", 3)).unwrap_err();
    assert!(err.to_string().contains("does not fit in 128 bits"), "{err}");
    let bytes: Vec<u8> = pickle::decode(&case("bytes", 1)).unwrap();
    assert_eq!(bytes, b"\x00\x01bin\xff");
    let json: serde_json::Value = pickle::decode(&case("nested", 0)).unwrap();
    assert_eq!(json, serde_json::json!({"k": [[1, 2], {"z": [113]}, []]}));
    let none: Option<i64> = pickle::decode(&case("none", 5)).unwrap();
    assert_eq!(none, None);
    let unit: () = pickle::decode(&case("empty_tuple", 2)).unwrap();
    let () = unit;
}

/// Rust values pickle as the Python types they stand for.
#[test]
fn rust_values_map_to_python_types() {
    #[derive(serde::Serialize)]
    struct Point {
        x: i32,
        tags: Vec<&'static str>,
    }
    let value = pickle::to_value(&(1u8, "a", Some(2.5), None::<i64>, Point { x: 3, tags: vec!["t"] })).unwrap();
    assert_eq!(value.to_string(), "(1, 'a', 2.5, None, {'x': 3, 'tags': ['t']})");
    assert_eq!(pickle::to_value(&u128::MAX).unwrap().to_string(), "340282366920938463463374607431768211455");
    assert_eq!(pickle::to_value(&()).unwrap(), PyValue::None);
    // A PyValue decoded into a PyValue keeps its Python types, also inside other types.
    let original = pickle::decode_value(&golden().cases.iter().find(|c| c.name == "nested").unwrap().pickle).unwrap();
    let wrapped = PyValue::Tuple(vec![original.clone(), PyValue::Set(vec![PyValue::Int(1)])]);
    let (inner, set): (PyValue, PyValue) = pickle::from_value(wrapped).unwrap();
    assert_eq!((inner, set.to_string()), (original, "{1}".to_owned()));
}

/// Exceptions: what Rust writes Python raises as a builtin class; what Python writes reads as
/// `Class: message`, without evaluating anything.
#[test]
fn exceptions_both_ways() {
    let error = UserError::new(Strategy::Pickle, "TypeError: bad arguments");
    assert_eq!(error.text(), "TypeError: bad arguments");
    assert_eq!(UserError::new(Strategy::Pickle, "boom").text(), "Exception: boom");
    let dir = fixtures().join("academy-1.0.0/messages/pickle");
    let read = |name: &str| Message::from_json(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
    let Body::UserError(error) = read("user-error-response.json").body else { panic!("not an error") };
    assert_eq!(error.text(), "ValueError: bad value");
    let Body::UserError(error) = read("user-error-response-academy-exception.json").body else { panic!() };
    assert_eq!(error.text(), "academy.exception.AgentTerminatedError");
    let Body::ActionRequest(request) = read("action-request.json").body else { panic!() };
    let (a, b): (i64, i64) = request.args().unwrap();
    assert_eq!((a, b), (1, 2));
    let kwargs: std::collections::HashMap<String, f64> = request.kwargs().unwrap();
    assert_eq!(kwargs["scale"], 0.5);
    let Body::ActionRequest(request) = read("action-request-explicit-serializers.json").body else { panic!() };
    assert_eq!(request.args::<PyValue>().unwrap().to_string(), "('héllo', [1, 2.5, None, True], {'k': 'v'})");
    let bad = ActionRequest { pargs: "not base64!".into(), ..request };
    assert!(bad.args::<PyValue>().unwrap_err().to_string().contains("base64"));
}

/// Deep nesting, recursion and exponential sharing are refused, not crashed on.
#[test]
fn hostile_structures_are_refused() {
    let b64 = |bytes: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    // 10 000 nested lists.
    let mut deep = vec![0x80, 4];
    deep.extend(std::iter::repeat_n(b']', 10_000));
    deep.extend(std::iter::repeat_n(b'a', 9_999));
    deep.push(b'.');
    let err = pickle::decode_value(&b64(&deep)).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
    // A list that contains itself: l = []; l.append(l).
    let err = pickle::decode_value(&b64(b"\x80\x04]\x94h\x00a.")).unwrap_err();
    assert!(err.to_string().contains("recursive"), "{err}");
    // (a, a) where a = (b, b) ... 60 levels: 2^60 items when copied.
    let wide = {
        let mut out = vec![0x80, 4, b'N'];
        for level in 0..60u32 {
            out.push(b'r');
            out.extend_from_slice(&level.to_le_bytes());
            out.push(b'j');
            out.extend_from_slice(&level.to_le_bytes());
            out.push(0x86);
        }
        out.push(b'.');
        out
    };
    let err = pickle::decode_value(&b64(&wide)).unwrap_err();
    assert!(err.to_string().contains("expands to more than"), "{err}");
    // Decimal literals past Python's own 4300-digit limit (they would cost quadratic time).
    let mut long = b"L".to_vec();
    long.extend(std::iter::repeat_n(b'7', 5000));
    long.extend_from_slice(b"L\n.");
    let err = pickle::decode_value(&b64(&long)).unwrap_err();
    assert!(err.to_string().contains("4300 digits"), "{err}");
    // A huge int is named by its size in errors, not printed.
    let mut huge = b"\x80\x04\x8b\x00\x00\x01\x00".to_vec();
    huge.extend(std::iter::repeat_n(0x11, 65536));
    huge.push(b'.');
    let err = pickle::decode::<i64>(&b64(&huge)).unwrap_err();
    assert!(err.to_string().contains("an integer of 524285 bits"), "{err}");
    for (bytes, expected) in [
        (&b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x85R."[..], "builtins.eval"),
        (b"cos\nsystem\n(S'true'\ntR.", "Python 2"),
        (b"\x80\x05\x97.", "out-of-band"),
        (b"\x80\x06N.", "protocol 6"),
        (b"\x80\x04\x8b\xff\xff\xff\xff.", "negative length"),
        (b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff.", "truncated"),
        (b"", "truncated"),
    ] {
        let err = pickle::decode_value(&b64(bytes)).unwrap_err();
        assert!(err.to_string().contains(expected), "{bytes:?}: {err}");
    }
}

/// A small deterministic PRNG (xorshift64*), so the randomized test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bytes, and golden pickles with random bytes flipped, inserted, deleted or
/// truncated, decode to a value or an error: never a panic. Random values round-trip.
#[test]
fn random_and_mutated_pickles_never_panic() {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let seeds: Vec<Vec<u8>> = golden().cases.iter().map(|c| engine.decode(&c.pickle).unwrap()).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = std::time::Instant::now();
    let mut decoded = 0usize;
    for round in 0..60_000 {
        let mut data = if round % 10 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(4) {
            if data.is_empty() {
                break;
            }
            let at = rng.below(data.len());
            match rng.below(4) {
                0 => data[at] = rng.next() as u8,
                1 => data.insert(at, rng.next() as u8),
                2 => {
                    data.remove(at);
                }
                _ => data.truncate(at),
            }
        }
        let text = engine.encode(&data);
        if let Ok(value) = pickle::decode_value(&text) {
            decoded += 1;
            let again = pickle::decode_value(&pickle::encode(&value).unwrap()).unwrap();
            assert!(again == value || value.to_string().contains("nan"), "{value} re-read as {again}");
            let _ = pickle::from_value::<serde_json::Value>(value);
        }
        let _ = pickle::exception_text(&text);
    }
    assert!(decoded > 1_000, "mutations should still decode sometimes: {decoded}");
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}
