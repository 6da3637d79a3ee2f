//! The pinned academy-py the interop tests run beside our code.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The python of the venv with `academy-py==1.0.0` (`ACADEMY_PYTHON`, or the one
/// `scripts/academy-venv.sh` creates once). Panics with the reason if it cannot be had: an
/// interop test never passes by skipping.
pub fn academy_python() -> PathBuf {
    if let Some(python) = std::env::var_os("ACADEMY_PYTHON") {
        return PathBuf::from(python);
    }
    let script = repo_root().join("scripts/academy-venv.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed (needs python3 with venv and network access to PyPI): {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("utf-8 path").trim())
}
