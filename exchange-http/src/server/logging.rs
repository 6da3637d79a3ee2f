//! The server's logs, configured by `[logger]`: stderr at `level`, and optionally a file at
//! `logfile_level`, rotated like Python's `TimedRotatingFileHandler` (`<file>.YYYY-MM-DD`,
//! `backup_count` kept), as text (colour only on a terminal, `NO_COLOR` honoured) or JSON lines.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use exchange_core::{Error, Result};
use parking_lot::Mutex;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::config::{LogFormat, LogLevel, LoggerConfig};

const DAY: Duration = Duration::from_secs(86_400);

/// Installs the process-wide subscriber described by `config` (`RUST_LOG` overrides the
/// console level).
///
/// # Errors
/// [`Error::Config`] for a level that is not one, or a log file that cannot be opened.
pub fn init_logging(config: &LoggerConfig) -> Result<()> {
    let console_filter = match std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()) {
        Some(directives) => filter(&directives, "RUST_LOG")?,
        None => filter(&directive(config.level.as_ref(), "info")?, "[logger] level")?,
    };
    let colour = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut layers = vec![layer(config.format, io::stderr, colour).with_filter(console_filter).boxed()];
    if let Some(path) = &config.logfile {
        let interval = config.rotate.then(|| DAY * config.rotation_interval_days);
        let file = RotatingFile::open(path, interval, config.backup_count as usize)?;
        let file_filter = filter(&directive(config.logfile_level.as_ref(), "info")?, "[logger] logfile_level")?;
        layers.push(layer(config.format, file, false).with_filter(file_filter).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| Error::config(format!("cannot install the logger: {e}")))
}

fn directive(level: Option<&LogLevel>, default: &str) -> Result<String> {
    level.map_or_else(|| Ok(default.to_owned()), LogLevel::directive)
}

fn filter(directives: &str, what: &str) -> Result<EnvFilter> {
    EnvFilter::try_new(directives).map_err(|e| Error::config(format!("invalid {what} {directives:?}: {e}")))
}

fn layer<W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_current_span(false).boxed(),
    }
}

/// A log file that is renamed to `<file>.<date>` every `interval` (when set), keeping the
/// newest `backups`.
struct RotatingFile {
    path: PathBuf,
    interval: Option<Duration>,
    backups: usize,
    state: Mutex<(File, SystemTime)>,
}

impl RotatingFile {
    fn open(path: &Path, interval: Option<Duration>, backups: usize) -> Result<Self> {
        let cannot = |e: io::Error| Error::config(format!("cannot open log file {}: {e}", path.display()));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(cannot)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(cannot)?;
        // Like Python's handler, the first period counts from the file's last change.
        let since = file.metadata().and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
        Ok(RotatingFile { path: path.to_owned(), interval, backups, state: Mutex::new((file, since)) })
    }

    /// Renames the current file away and opens a fresh one when its period is over.
    fn rotate_if_due(&self, state: &mut (File, SystemTime)) -> io::Result<()> {
        let Some(interval) = self.interval else { return Ok(()) };
        let now = SystemTime::now();
        if now.duration_since(state.1).unwrap_or_default() < interval {
            return Ok(());
        }
        state.0.flush()?;
        let stamp = if interval >= DAY { date(state.1) } else { date_time(state.1) };
        let mut rotated = self.path.as_os_str().to_owned();
        rotated.push(format!(".{stamp}"));
        std::fs::rename(&self.path, &rotated)?;
        state.0 = OpenOptions::new().create(true).append(true).open(&self.path)?;
        state.1 = now;
        self.prune();
        Ok(())
    }

    /// Deletes rotated files beyond the newest `backups` (their suffixes sort by time).
    fn prune(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else { return };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut rotated: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(&prefix)).is_some_and(|suffix| {
                    !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'_')
                })
            })
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.backups);
        for old in &rotated[..excess] {
            let _ = std::fs::remove_file(old);
        }
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = &'a RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        // A failed rotation keeps writing to the current file.
        let _ = self.rotate_if_due(&mut state);
        state.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state.lock().0.flush()
    }
}

/// `YYYY-MM-DD` (UTC) of a time.
fn date(at: SystemTime) -> String {
    let days = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD_HH-MM-SS` (UTC): names rotations shorter than a day (tests).
fn date_time(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let of_day = secs % 86_400;
    format!("{}_{:02}-{:02}-{:02}", date(at), of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29");
    }

    #[test]
    fn rotates_and_keeps_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/server.log");
        let file = RotatingFile::open(&path, Some(DAY), 2).unwrap();
        (&file).write_all(b"fresh\n").unwrap();
        for days_ago in [9u32, 7, 5, 3] {
            // Pretend the current file was started that many days ago.
            file.state.lock().1 = SystemTime::now() - DAY * days_ago;
            (&file).write_all(format!("written {days_ago} days later\n").as_bytes()).unwrap();
        }
        let mut rotated: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "server.log")
            .collect();
        rotated.sort();
        let expected: Vec<String> =
            [5u32, 3].iter().map(|d| format!("server.log.{}", date(SystemTime::now() - DAY * *d))).collect();
        assert_eq!(rotated, expected, "the two newest rotations are kept");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "written 3 days later\n");
    }
}
