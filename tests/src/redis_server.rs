//! A private `redis-server` for tests: free port on 127.0.0.1, no persistence unless asked,
//! log and data in a temporary directory, killed on drop.
//!
//! Set `REDIS_SERVER` to the binary to use (default: `redis-server` on `PATH`). Tests that can
//! share a server honour `REDIS_URL` instead (see [`redis_url_override`]).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    args: Vec<String>,
    /// TLS only: the port speaks TLS and the plain port is off.
    tls: bool,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The URL of an external Redis given in `REDIS_URL`, if any (opt-in, for CI services).
pub fn redis_url_override() -> Option<String> {
    std::env::var("REDIS_URL").ok().filter(|url| !url.is_empty())
}

impl RedisServer {
    /// Starts a server without persistence (`--save "" --appendonly no`).
    ///
    /// # Panics
    /// If `redis-server` is missing or does not answer `PING` in time (the message says how
    /// to install it): a backend that cannot be tested must never pass as green.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a server that writes every change to its append-only file before answering
    /// (`--appendonly yes --appendfsync always`), so it can be killed and restarted without
    /// losing acknowledged writes.
    pub fn start_durable() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("create a temporary directory for redis-server");
        let port = free_port();
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let mut server = RedisServer { port, args, tls: false, child: None, dir };
        server.spawn();
        server
    }

    /// Starts a TLS-only server (no persistence) with this certificate chain and key (PEM
    /// files); clients are not asked for certificates.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let dir = tempfile::tempdir().expect("create a temporary directory for redis-server");
        let mut args: Vec<String> =
            ["--save", "", "--appendonly", "no", "--tls-auth-clients", "no"].map(String::from).into();
        args.extend(["--tls-cert-file".into(), cert.display().to_string()]);
        args.extend(["--tls-key-file".into(), key.display().to_string()]);
        args.extend(["--tls-ca-cert-file".into(), cert.display().to_string()]);
        let mut server = RedisServer { port: free_port(), args, tls: true, child: None, dir };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL: no shutdown save), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let port = self.port.to_string();
        let ports: &[&str] = if self.tls { &["--port", "0", "--tls-port", &port] } else { &["--port", &port] };
        let child = Command::new(&binary)
            .args(ports)
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{binary}` ({e}): the Redis tests need a redis-server binary. Install it \
                     (`apt-get install redis-server`, `brew install redis`), point REDIS_SERVER at one, or set \
                     REDIS_URL to a server the tests may use"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            let ready = if self.tls { TcpStream::connect(("127.0.0.1", self.port)).is_ok() } else { ping(self.port) };
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited with {status} on port {}; log:\n{}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING within {READY_WITHIN:?}; log:\n{}", self.port, self.log());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Whether a server on `port` is up and has loaded its data: `PING` answers `+PONG`, or
/// `-NOAUTH` when it wants a password (a loading server answers `-LOADING`).
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).unwrap_or(0);
    reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH")
}
