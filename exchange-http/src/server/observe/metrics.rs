//! The server's Prometheus metrics: what `GET /metrics` answers. Labels come from bounded
//! sets only (routes of the router, methods, statuses, storage operations), never ids.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::server::storage::StoreTotals;

/// `route`, `method`, `status` of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.1 ms to 26 s in ten buckets (long polls and streams last up to the receive timeout).
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

/// Every metric of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Histograms<RouteLabels>,
    accepted: Counter,
    delivered: Counter,
    connections: Gauge,
    streams: Gauge,
    long_polls: Gauge,
    refused: Family<RuleLabels, Counter>,
    storage_errors: Counter,
    storage_durations: Histograms<OperationLabels>,
    /// Samples of (when, accepted, delivered) for the rates of the last minute.
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

/// What the status page shows of the live traffic.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Live {
    pub(crate) open_connections: i64,
    pub(crate) event_streams: i64,
    pub(crate) long_polls: i64,
    pub(crate) messages_accepted: u64,
    pub(crate) messages_delivered: u64,
    /// Messages per second over the last minute (since the first look, if later); `None` at
    /// the first look.
    pub(crate) accepted_per_s: Option<f64>,
    pub(crate) delivered_per_s: Option<f64>,
}

/// How far back the rates look.
const RATE_WINDOW: Duration = Duration::from_secs(60);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("exchange");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Histograms<RouteLabels> = Family::new_with_constructor(seconds_histogram);
        let storage_durations: Histograms<OperationLabels> = Family::new_with_constructor(seconds_histogram);
        let metrics = Metrics {
            requests,
            durations,
            accepted: Counter::default(),
            delivered: Counter::default(),
            connections: Gauge::default(),
            streams: Gauge::default(),
            long_polls: Gauge::default(),
            refused: Family::default(),
            storage_errors: Counter::default(),
            storage_durations,
            samples: Mutex::default(),
            registry: Registry::default(),
        };
        // Registered clones share their values with the fields above.
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route (event streams: until the stream starts)",
            metrics.durations.clone(),
        );
        registry.register("messages_accepted", "Messages stored by PUT /message", metrics.accepted.clone());
        registry.register(
            "messages_delivered",
            "Messages handed to receivers (long polls and event streams; a message put back and handed out again counts twice)",
            metrics.delivered.clone(),
        );
        registry.register("open_connections", "Client connections being served", metrics.connections.clone());
        registry.register("event_streams", "Open event streams (GET /mailbox/listen)", metrics.streams.clone());
        registry.register("long_polls", "Receives (GET /message) waiting for a message", metrics.long_polls.clone());
        registry.register(
            "refused_credentials",
            "Requests refused by authentication, by rule (missing: no bearer token; refused: unknown token)",
            metrics.refused.clone(),
        );
        registry.register(
            "storage_errors",
            "Storage operations that failed (Redis unreachable, timed out…)",
            metrics.storage_errors.clone(),
        );
        registry.register(
            "storage_duration_seconds",
            "Round trip of storage operations, by operation (receives excluded: they wait for messages)",
            metrics.storage_durations.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

/// Gauge that goes down again when dropped.
#[derive(Debug)]
pub(crate) struct Held(Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn hold(gauge: &Gauge) -> Held {
    gauge.inc();
    Held(gauge.clone())
}

impl Metrics {
    /// Counts a finished request.
    pub(crate) fn request(&self, route: &str, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = match *method {
            Method::GET => "GET",
            Method::PUT => "PUT",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            _ => "other",
        };
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), method, status: status.as_u16() }).inc();
        self.durations.get_or_create(&RouteLabels { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// A message was stored.
    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    /// A message was handed to a receiver.
    pub(crate) fn delivered(&self) {
        self.delivered.inc();
    }

    /// Authentication refused a request under `rule`.
    pub(crate) fn refused(&self, rule: &'static str) {
        self.refused.get_or_create(&RuleLabels { rule }).inc();
    }

    /// A storage operation finished after `elapsed` (`None`: not timed), failed or not.
    pub(crate) fn storage(&self, operation: &'static str, elapsed: Option<Duration>, failed: bool) {
        if failed {
            self.storage_errors.inc();
        }
        if let Some(elapsed) = elapsed {
            self.storage_durations.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a served connection while the guard lives.
    pub(crate) fn connection(&self) -> Held {
        hold(&self.connections)
    }

    /// Counts an open event stream while the guard lives.
    pub(crate) fn stream(&self) -> Held {
        hold(&self.streams)
    }

    /// Counts a waiting long poll while the guard lives.
    pub(crate) fn long_poll(&self) -> Held {
        hold(&self.long_polls)
    }

    /// The live counts, and rates over the last minute (each call is a sample).
    pub(crate) fn live(&self) -> Live {
        let now = Instant::now();
        let (accepted, delivered) = (self.accepted.get(), self.delivered.get());
        let mut samples = self.samples.lock();
        while samples.len() > 1 && samples.get(1).is_some_and(|(at, ..)| now - *at >= RATE_WINDOW) {
            samples.pop_front();
        }
        let rate = |then: u64, now_count: u64, elapsed: Duration| {
            (elapsed.as_secs_f64() > 0.0).then(|| now_count.saturating_sub(then) as f64 / elapsed.as_secs_f64())
        };
        let (accepted_per_s, delivered_per_s) = match samples.front() {
            Some(&(at, a, d)) => (rate(a, accepted, now - at), rate(d, delivered, now - at)),
            None => (None, None),
        };
        if samples.back().is_none_or(|(at, ..)| now - *at >= Duration::from_secs(1)) {
            samples.push_back((now, accepted, delivered));
        }
        Live {
            open_connections: self.connections.get(),
            event_streams: self.streams.get(),
            long_polls: self.long_polls.get(),
            messages_accepted: accepted,
            messages_delivered: delivered,
            accepted_per_s,
            delivered_per_s,
        }
    }

    /// The Prometheus text of every metric, plus the store's totals when it knows them and the
    /// times it lost its data.
    pub(crate) fn encode(&self, totals: Option<StoreTotals>, data_losses: u64) -> String {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        let mut health = Registry::with_prefix("exchange");
        let losses: Counter = Counter::default();
        losses.inc_by(data_losses);
        health.register(
            "storage_data_losses",
            "Times the store was found to have lost its data (Redis: the marker key exchange-server:marker vanished)",
            losses,
        );
        prometheus_text::encode(&mut text, &health).expect("writing to a String cannot fail");
        if let Some(totals) = totals {
            let mut store = Registry::with_prefix("exchange");
            let gauge = |value: u64| {
                let gauge: Gauge = Gauge::default();
                gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
                gauge
            };
            store.register("queued_messages", "Messages waiting in mailbox queues", gauge(totals.queued_messages));
            store.register(
                "queued_bytes",
                "Bytes of the messages waiting in mailbox queues",
                gauge(totals.queued_bytes),
            );
            let mailboxes = Family::<StatusLabels, Gauge>::default();
            mailboxes.get_or_create(&StatusLabels { status: "active" }).set(totals.active_mailboxes as i64);
            mailboxes.get_or_create(&StatusLabels { status: "terminated" }).set(totals.terminated_mailboxes as i64);
            store.register("mailboxes", "Mailboxes by status (terminated: gravestones kept)", mailboxes);
            prometheus_text::encode(&mut text, &store).expect("writing to a String cannot fail");
        }
        text
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
