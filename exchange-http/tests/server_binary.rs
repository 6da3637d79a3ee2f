//! The `exchange-server` binary: config file plus flags, answers, and shuts down gracefully on
//! SIGTERM while a long poll and an event stream are open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn request(port: u16, method: &str, path: &str, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

fn status_of(mut stream: TcpStream) -> (u16, String) {
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    (text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

#[test]
fn serves_from_config_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("exchange-server-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("exchange.toml");
    // The flag overrides the file's port.
    std::fs::write(&config, "host = \"127.0.0.1\"\nport = 1\nlisten_timeout_s = 30\n[logger]\nlevel = \"warn\"\n")
        .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_exchange-server"))
        .arg("--config")
        .arg(&config)
        .args(["--port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the server did not open its port");
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = r#"{\"uid\":\"00000000-0000-4000-8000-000000000001\",\"name\":null,\"role\":\"user\"}"#;
    let (status, _) = status_of(request(port, "POST", "/mailbox", &format!(r#"{{"mailbox": "{id}"}}"#)));
    assert_eq!(status, 200);
    let poll = request(port, "GET", "/message", &format!(r#"{{"mailbox": "{id}", "timeout": 30}}"#));
    let mut stream = request(port, "GET", "/mailbox/listen", &format!(r#"{{"mailbox": "{id}", "timeout": 30}}"#));
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let (status, _) = status_of(poll);
    assert_eq!(status, 503, "an open long poll answers 503 on shutdown");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"), "the event stream ends");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(stopping.elapsed() < Duration::from_secs(10), "shutdown took {:?}", stopping.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_a_bad_config() {
    let dir = std::env::temp_dir().join(format!("exchange-server-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "port = 5463\nunknown_key = 1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_exchange-server")).arg("--config").arg(&config).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown_key"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
