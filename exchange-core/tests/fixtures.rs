//! Every Academy 1.0 fixture parses and re-serializes to an equal JSON value.

use std::path::{Path, PathBuf};

use exchange_core::{Body, EntityId, Error, Message};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/academy-1.0.0")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn identifiers_round_trip_byte_for_byte() {
    let files = json_files(&fixtures().join("identifiers"));
    assert_eq!(files.len(), 4);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let id: EntityId = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), text, "{}", path.display());
    }
}

#[test]
fn messages_round_trip_as_json_values() {
    let files = json_files(&fixtures().join("messages"));
    assert!(files.len() >= 30, "expected every message fixture, found {}", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let message = Message::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!matches!(message.body, Body::Other(_)), "{}: body kind not recognised", path.display());
        assert_eq!(value(&message.to_json()), value(&text), "{}", path.display());
        // Academy's compact output is reproducible byte for byte.
        assert_eq!(message.to_json(), text, "{}", path.display());
    }
}

#[test]
fn json_payloads_decode() {
    let text =
        std::fs::read_to_string(fixtures().join("messages/json/action-request-explicit-serializers.json")).unwrap();
    let Body::ActionRequest(request) = Message::from_json(&text).unwrap().body else { panic!("not a request") };
    let args: Value = request.args().unwrap();
    assert_eq!(args, serde_json::json!(["h\u{e9}llo", [1, 2.5, null, true], {"k": "v"}]));
    let text = std::fs::read_to_string(fixtures().join("messages/json/user-error-response-traceback.json")).unwrap();
    let Body::UserError(error) = Message::from_json(&text).unwrap().body else { panic!("not an error") };
    assert!(error.text().ends_with("RuntimeError: boom\n"));
    let text = std::fs::read_to_string(fixtures().join("messages/pickle/action-request.json")).unwrap();
    let Body::ActionRequest(request) = Message::from_json(&text).unwrap().body else { panic!("not a request") };
    // Pickle payloads decode too (Python's basic values; see tests/pickle.rs).
    let args: Value = request.args().unwrap();
    assert_eq!(args, serde_json::json!([1, 2]));
}

#[test]
fn compat_inputs_behave_as_academy() {
    for path in json_files(&fixtures().join("compat")) {
        let case: Value = value(&std::fs::read_to_string(&path).unwrap());
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let input = case["input"].to_string();
        let message = Message::from_json(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = &case["academy_reserialized"];
        match name.as_str() {
            "incompatible-major-version.json" => {
                assert!(expected.is_null());
                assert!(matches!(message.header.check_protocol(), Err(Error::IncompatibleProtocol { .. })));
            }
            "empty-body-is-ping.json" => {
                // Documented difference: a body without a kind is kept as an unknown body
                // (passed through untouched) instead of being read as a ping.
                assert!(matches!(message.body, Body::Other(_)));
                message.header.check_protocol().unwrap();
            }
            _ => {
                message.header.check_protocol().unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(&value(&message.to_json()), expected, "{name}");
            }
        }
    }
}
