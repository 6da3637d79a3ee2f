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

/// Waits until a server listens on `port` (a hang detector: 60 s).
fn wait_for_port(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not open its port");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_of(mut stream: TcpStream) -> (u16, String) {
    let mut text = String::new();
    if let Err(e) = stream.read_to_string(&mut text) {
        return (0, format!("{e}: {text}"));
    }
    (text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    wait_for_port(port);
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

/// Under a low open-file limit the connection cap is lowered below it: connections past the
/// cap get a clean 503 instead of starving the listener (no `Too many open files` loop), and
/// the server serves again once they close.
#[test]
fn connection_cap_stays_below_the_open_file_limit() {
    let port = free_port();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 320 && exec '{}' --port {port}", env!("CARGO_BIN_EXE_exchange-server")))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    wait_for_port(port);
    let streams: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    // Past the cap: a 503 (or, beyond the answers it sends at once, a plain close).
    let (mut held, mut answered, mut closed) = (Vec::new(), 0, 0);
    for mut stream in streams {
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut first = [0u8; 12];
        match stream.read(&mut first) {
            Ok(12) if &first == b"HTTP/1.1 503" => answered += 1,
            Ok(0) => closed += 1,
            Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&first[..n])),
            Err(_) => held.push(stream),
        }
    }
    assert!(held.len() <= 64, "{} connections held under a 320-file limit", held.len());
    assert!(answered > 0 && answered + closed >= 300, "{answered} answered 503, {closed} closed");
    drop(held);
    let started = Instant::now();
    let id = r#"{\"uid\":\"00000000-0000-4000-8000-000000000002\",\"name\":null,\"role\":\"user\"}"#;
    loop {
        let (status, text) = status_of(request(port, "POST", "/mailbox", &format!(r#"{{"mailbox": "{id}"}}"#)));
        if status == 200 {
            break;
        }
        assert!(status == 503 || status == 0, "{text}");
        assert!(started.elapsed() < Duration::from_secs(30), "not served again after the others closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.0.kill().unwrap();
    let mut log = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("max_connections lowered"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// SIGTERM with clients that hold half a head, half a body and an unread event stream: the
/// server exits after its shutdown deadline, and says so and how many queued messages the
/// memory storage discarded.
#[test]
fn sigterm_ends_within_the_shutdown_deadline() {
    let dir = std::env::temp_dir().join(format!("exchange-server-deadline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("exchange.toml");
    std::fs::write(&config, "[limits]\nshutdown_timeout_s = 1\n").unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_exchange-server"))
        .arg("--config")
        .arg(&config)
        .args(["--port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let id = r#"{\"uid\":\"00000000-0000-4000-8000-000000000003\",\"name\":null,\"role\":\"user\"}"#;
    let (status, _) = status_of(request(port, "POST", "/mailbox", &format!(r#"{{"mailbox": "{id}"}}"#)));
    assert_eq!(status, 200);
    let message = r#"{\"header\":{\"src\":{\"uid\":\"00000000-0000-4000-8000-000000000003\",\"name\":null,\"role\":\"user\"},\"dest\":{\"uid\":\"00000000-0000-4000-8000-000000000003\",\"name\":null,\"role\":\"user\"},\"tag\":\"00000000-0000-4000-8000-0000000000aa\",\"kind\":\"request\"},\"body\":{\"kind\":\"ping-request\"}}"#;
    for _ in 0..3 {
        let (status, text) = status_of(request(port, "PUT", "/message", &format!(r#"{{"message": "{message}"}}"#)));
        assert_eq!(status, 200, "{text}");
    }
    let mut half_head = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half_head.write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut half_body = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half_body.write_all(b"PUT /message HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mes").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "exit status {}", output.status);
    assert!(stopping.elapsed() < Duration::from_secs(20), "shutdown took {:?}", stopping.elapsed());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("shutdown deadline passed"), "{log}");
    assert!(log.contains("queued_messages=3") && log.contains("discarded"), "{log}");
    drop((half_head, half_body));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An Academy server file with a log file: the file gets the info lines, the console only
/// warnings; `--log-format json` writes JSON lines.
#[test]
fn academy_logger_keys_and_json_lines() {
    let dir = std::env::temp_dir().join(format!("exchange-server-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("academy.toml");
    let logfile = dir.join("nested/exchange.log");
    std::fs::write(
        &config,
        format!(
            "host = \"127.0.0.1\"\nport = 1\n[backend]\nkind = \"python\"\n[logger]\nlevel = \"WARNING\"\nlogfile = {:?}\nlogfile_level = \"INFO\"\nrotate = true\n",
            logfile.display().to_string()
        ),
    )
    .unwrap();
    for json in [false, true] {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_exchange-server"));
        command.arg("--config").arg(&config).args(["--port", &port.to_string()]).stderr(Stdio::piped());
        if json {
            command.args(["--log-format", "json"]).env("RUST_LOG", "info");
        }
        let mut child = command.spawn().unwrap();
        wait_for_port(port);
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let mut console = String::new();
        child.stderr.take().unwrap().read_to_string(&mut console).unwrap();
        assert!(child.wait().unwrap().success());
        let file = std::fs::read_to_string(&logfile).unwrap();
        assert!(file.contains("exchange server listening"), "log file: {file}");
        if json {
            let line = console.lines().find(|l| l.contains("exchange server listening")).expect("a startup line");
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(parsed["level"], "INFO", "{line}");
            assert!(parsed["described"].as_str().unwrap().contains("storage=memory"), "{line}");
        } else {
            assert!(!console.contains("exchange server listening"), "info on a WARNING console: {console}");
            assert!(!file.contains('\u{1b}'), "colour codes in the log file");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--version` and `--help` name the server, not the crate.
#[test]
fn version_and_help_name_the_server() {
    let version = Command::new(env!("CARGO_BIN_EXE_exchange-server")).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with(&format!("exchange-server {}", env!("CARGO_PKG_VERSION"))), "{text}");
    let help = Command::new(env!("CARGO_BIN_EXE_exchange-server")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("exchange server") && !text.contains("reqwest"), "{text}");
}
