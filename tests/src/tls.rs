//! Test certificates.

use std::path::{Path, PathBuf};

/// A self-signed certificate for 127.0.0.1 and `localhost` (files `cert.pem` and `key.pem` in
/// `dir`) made with the `openssl` command.
///
/// # Panics
/// If `openssl` is missing or fails: a TLS test that cannot run must fail.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command makes the test certificate");
    assert!(status.success(), "openssl failed");
    (cert, key)
}
