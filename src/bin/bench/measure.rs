//! Measuring helpers: CPU windows, percentiles, JSON output.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{Args, merge};

/// Prints one result line.
pub(crate) fn emit(args: &Args, scenario: &str, fields: Value) {
    let head = json!({ "backend": args.label(), "scenario": scenario, "rep": args.rep });
    let tail = json!({
        "impl": "rust-exchange",
        "version": exchange::LIBRARY_VERSION,
        "ts": round(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(), 3),
    });
    println!("{}", merge(merge(head, fields), tail));
}

/// Rounds to `digits` decimals.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Percentile with linear interpolation, as the anchor script computes it.
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = k.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

/// `p50_us`, `p90_us`, `p99_us`, `mean_us`, `max_us` of latency samples.
pub(crate) fn lat_stats(samples: &[Duration]) -> Value {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let mean = us.iter().sum::<f64>() / us.len().max(1) as f64;
    json!({
        "p50_us": round(pct(&us, 50.0), 2),
        "p90_us": round(pct(&us, 90.0), 2),
        "p99_us": round(pct(&us, 99.0), 2),
        "mean_us": round(mean, 2),
        "max_us": round(us.last().copied().unwrap_or(f64::NAN), 2),
    })
}

fn own_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Wall and CPU time (ours and the servers') over a window.
pub(crate) struct CpuWindow {
    pids: Vec<u32>,
    wall0: Instant,
    cpu0: Duration,
    servers0: Vec<Option<Duration>>,
    /// Wall time of the closed window.
    pub(crate) wall: Duration,
    cpu: Duration,
    servers: Vec<(u32, Duration)>,
}

impl CpuWindow {
    /// Starts a window.
    pub(crate) fn start(args: &Args) -> Self {
        let pids = args.server_pids();
        let servers0 = pids.iter().map(|p| proc_cpu(*p)).collect();
        CpuWindow {
            pids,
            servers0,
            cpu0: own_cpu(),
            wall0: Instant::now(),
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
            servers: Vec::new(),
        }
    }

    /// Closes the window.
    pub(crate) fn stop(mut self) -> Self {
        self.wall = self.wall0.elapsed();
        self.cpu = own_cpu() - self.cpu0;
        self.servers = self
            .pids
            .iter()
            .zip(&self.servers0)
            .filter_map(|(pid, before)| Some((*pid, proc_cpu(*pid)? - (*before)?)))
            .collect();
        self
    }

    /// `wall_s`, `client_cpu_s`, per-unit CPU and server CPU fields.
    pub(crate) fn fields(&self, units: usize) -> Value {
        let mut out = json!({
            "wall_s": round(self.wall.as_secs_f64(), 4),
            "client_cpu_s": round(self.cpu.as_secs_f64(), 3),
            "client_cpu_us_per_msg": round(self.cpu.as_secs_f64() / units.max(1) as f64 * 1e6, 2),
        });
        if !self.servers.is_empty() {
            let total: serde_json::Map<String, Value> =
                self.servers.iter().map(|(p, d)| (p.to_string(), json!(round(d.as_secs_f64(), 3)))).collect();
            let per: serde_json::Map<String, Value> = self
                .servers
                .iter()
                .map(|(p, d)| (p.to_string(), json!(round(d.as_secs_f64() / units.max(1) as f64 * 1e6, 1))))
                .collect();
            out = merge(out, json!({ "server_cpu_s": total, "server_cpu_us_per_msg": per }));
        }
        out
    }
}
