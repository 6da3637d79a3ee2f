//! Captures every log line of a test binary as JSON (one global subscriber per process).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tracing_subscriber::filter::LevelFilter;

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Installs the capturing subscriber at `level` (the first call wins) and returns the buffer.
pub fn install(level: LevelFilter) -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt().json().with_max_level(level).with_writer(move || Sink(sink.clone())).init();
        logs
    })
    .clone()
}

/// The JSON log lines captured so far (after [`install`]) that satisfy `wanted`.
pub fn lines(wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let logs = LOGS.get().expect("log_capture::install first");
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|l| wanted(l)).collect()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
