//! Access to the Academy 1.0 fixtures kept in the repository (`fixtures/academy-1.0.0`, a copy
//! of the captures under `shared/spec/fixtures`).

use std::path::{Path, PathBuf};

/// The fixtures folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/academy-1.0.0")
}

/// Every message fixture (`messages/**.json`) as `(relative path, JSON text)`, sorted by path.
pub fn messages() -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect(&root().join("messages"), &mut out);
    assert!(!out.is_empty(), "no message fixtures under {}", root().display());
    out
}

fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read fixtures {}: {e}", dir.display()))
        .map(|e| e.expect("fixture dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("fixture text");
            let rel = path.strip_prefix(root()).unwrap_or(&path).display().to_string();
            out.push((rel, text));
        }
    }
}
