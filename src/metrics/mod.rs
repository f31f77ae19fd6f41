//! Everything Prometheus sees: the instruments the ingest path updates, and the values read at
//! scrape time (the counter's own gauges and the `process_*` family); served by
//! [`crate::http::scrape`].
//!
//! Instruments come from `prometheus-client`, which writes OpenMetrics text. A scraper that does
//! not ask for OpenMetrics gets the Prometheus text format 0.0.4, derived from the same output by
//! [`to_prometheus_text`].

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use thread_local::ThreadLocal;

use crate::counter::Counter;

mod process;

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every reason a log entry can be rejected for; each gets a series from the start, so that
/// `rate()` sees the first rejection.
const REJECT_REASONS: [&str; 12] = [
    "invalid_json",
    "missing_ip",
    "invalid_ip",
    "invalid_timestamp",
    "body_too_large",
    "unsupported_media_type",
    "invalid_body",
    "unauthorized",
    "rate_limited",
    "request_timeout",
    "storage_unavailable",
    "overloaded",
];

/// The ingest listener's routes as metric labels; any other path is `other`, so that scanners
/// probing random paths cannot create unbounded label values. `unparsed` counts the requests
/// refused before routing, whose head could not be read (a malformed request line, 414, 431).
const ROUTES: [&str; 7] = [
    "/logs",
    "/health",
    "/ready",
    "/stats",
    "/openapi.json",
    "other",
    "unparsed",
];

/// Where `other` and `unparsed` are in [`ROUTES`].
const OTHER: usize = 5;
const UNPARSED: usize = 6;

/// Upper bounds of the request-duration buckets in seconds: 50µs × 2^k up to 3.3 s, then
/// `f64::MAX` for `+Inf`. Doubling steps keep p99 within a factor of 2 from 100µs to 1 s.
const BUCKETS: [f64; 18] = {
    let mut buckets = [f64::MAX; 18];
    let mut k = 0;
    while k < buckets.len() - 1 {
        buckets[k] = 0.000_05 * (1u32 << k) as f64;
        k += 1;
    }
    buckets
};

/// An ingest route, as the `route` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(usize);

impl Route {
    /// The route a request path is counted under.
    pub fn of(path: &str) -> Route {
        let known = ROUTES[..OTHER].iter().position(|r| *r == path);
        Route(known.unwrap_or(OTHER))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabel {
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

/// What one thread has counted. Each thread updates only its own, under an uncontended lock,
/// and a scrape adds them up, so that worker threads never fight over shared instruments
/// (docs/DESIGN.md, "Metrics").
#[derive(Debug, Default)]
struct Tally {
    entries_received: u64,
    new_addresses: u64,
    entries_rejected: [u64; REJECT_REASONS.len()],
    /// (index into ROUTES, status) → requests; a handful of entries.
    requests: Vec<((usize, u16), u64)>,
    durations: [RouteHistogram; ROUTES.len()],
}

#[derive(Debug, Default, Clone, Copy)]
struct RouteHistogram {
    sum: f64,
    count: u64,
    /// Observations per bucket, not cumulative.
    buckets: [u64; BUCKETS.len()],
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.entries_received += other.entries_received;
        self.new_addresses += other.new_addresses;
        for (sum, n) in self.entries_rejected.iter_mut().zip(other.entries_rejected) {
            *sum += n;
        }
        for &(key, n) in &other.requests {
            self.count_request(key, n);
        }
        for (sum, h) in self.durations.iter_mut().zip(&other.durations) {
            sum.sum += h.sum;
            sum.count += h.count;
            for (a, b) in sum.buckets.iter_mut().zip(h.buckets) {
                *a += b;
            }
        }
    }

    fn count_request(&mut self, key: (usize, u16), n: u64) {
        match self.requests.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += n,
            None => self.requests.push((key, n)),
        }
    }
}

/// The registry, and the per-thread tallies that request handling updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tallies: Arc<ThreadLocal<Mutex<Tally>>>,
}

impl Metrics {
    /// Registers every metric; `counter`'s gauges are read on each scrape.
    pub fn new(counter: Arc<Counter>) -> Self {
        let tallies = Arc::new(ThreadLocal::new());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(CounterCollector { counter }));
        registry.register_collector(Box::new(TallyCollector {
            tallies: tallies.clone(),
        }));
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("ipcounter_build_info", "The running version", build);
        Metrics { registry, tallies }
    }

    fn with_tally(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.tallies.get_or_default().lock());
    }

    /// Counts `n` log entries received.
    pub fn entries_received(&self, n: u64) {
        self.with_tally(|t| t.entries_received += n);
    }

    /// Counts `n` addresses counted for the first time.
    pub fn new_addresses(&self, n: u64) {
        self.with_tally(|t| t.new_addresses += n);
    }

    /// Counts `n` log entries rejected for `reason`, an entry error code of [`crate::http::error::ApiError::code`].
    pub fn entries_rejected(&self, reason: &str, n: u64) {
        let at = REJECT_REASONS.iter().position(|r| *r == reason);
        debug_assert!(
            at.is_some(),
            "{reason} is not a reason entries are rejected for"
        );
        if let Some(at) = at {
            self.with_tally(|t| t.entries_rejected[at] += n);
        }
    }

    /// Counts one answered ingest request and its duration.
    pub fn request_done(&self, Route(route): Route, status: StatusCode, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len() - 1);
        self.with_tally(|t| {
            t.count_request((route, status.as_u16()), 1);
            let h = &mut t.durations[route];
            h.sum += seconds;
            h.count += 1;
            h.buckets[bucket] += 1;
        });
    }

    /// Counts a request refused before routing, with the `status` the HTTP layer answered.
    pub fn request_refused(&self, status: StatusCode) {
        self.with_tally(|t| t.count_request((UNPARSED, status.as_u16()), 1));
    }

    /// The whole exposition in OpenMetrics text.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families take the `_total` name
/// of their samples, and the `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 256);
    for line in openmetrics.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let (name, rest) = line.strip_prefix(p)?.split_once(' ')?;
            counters.contains(&name).then_some((p, name, rest))
        });
        match meta {
            Some((prefix, name, rest)) => out.push_str(&format!("{prefix}{name}_total {rest}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The per-thread tallies, added up on each scrape.
#[derive(Debug)]
struct TallyCollector {
    tallies: Arc<ThreadLocal<Mutex<Tally>>>,
}

impl Collector for TallyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut total = Tally::default();
        for tally in self.tallies.iter() {
            total.add(&tally.lock());
        }
        total.requests.sort_unstable();

        let received = ConstCounter::new(total.entries_received);
        received.encode(encoder.encode_descriptor(
            "ipcounter_log_entries_received",
            "Log entries received on POST /logs, valid or not",
            None,
            received.metric_type(),
        )?)?;

        let new = ConstCounter::new(total.new_addresses);
        new.encode(encoder.encode_descriptor(
            "ipcounter_new_addresses",
            "Addresses counted for the first time by this process",
            None,
            new.metric_type(),
        )?)?;

        let mut family = encoder.encode_descriptor(
            "ipcounter_log_entries_rejected",
            "Log entries rejected, by reason (the error code of the reply)",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in REJECT_REASONS.into_iter().zip(total.entries_rejected) {
            ConstCounter::new(n).encode(family.encode_family(&ReasonLabel { reason })?)?;
        }

        let mut family = encoder.encode_descriptor(
            "ipcounter_http_requests",
            "HTTP requests answered by the ingest listener, by route and status (route unparsed: refused before routing)",
            None,
            MetricType::Counter,
        )?;
        for ((route, status), n) in total.requests {
            let labels = RequestLabels {
                route: ROUTES[route],
                status,
            };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "ipcounter_http_request_duration_seconds",
            "Time from request to response on the ingest listener, by route",
            None,
            MetricType::Histogram,
        )?;
        for (route, h) in ROUTES.into_iter().zip(total.durations) {
            if h.count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = BUCKETS.into_iter().zip(h.buckets).collect();
            family
                .encode_family(&RouteLabel { route })?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
        Ok(())
    }
}

/// The counter's gauges, read on each scrape so that they are never out of step with `/stats`.
#[derive(Debug)]
struct CounterCollector {
    counter: Arc<Counter>,
}

impl Collector for CounterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for gauge in self.counter.gauges() {
            let value = ConstGauge::new(gauge.value as i64);
            value.encode(encoder.encode_descriptor(
                gauge.name,
                &gauge.help,
                None,
                value.metric_type(),
            )?)?;
        }
        let (mode, error) = self.counter.mode();
        let mut family = encoder.encode_descriptor(
            "ipcounter_count_mode",
            "1 for the COUNT_MODE the counts come from: exact, or approx (a HyperLogLog sketch)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(family.encode_family(&ModeLabel { mode })?)?;
        let error = ConstGauge::new(error);
        error.encode(encoder.encode_descriptor(
            "ipcounter_count_relative_standard_error",
            "Relative standard error of the counts: 1.04/sqrt(2^HLL_PRECISION) when approx, 0 when exact",
            None,
            error.metric_type(),
        )?)?;
        let windows = self.counter.windows();
        if !windows.is_empty() {
            let mut family = encoder.encode_descriptor(
                "unique_ip_addresses_window",
                "Distinct addresses whose latest event time lies in the window, exact to a step of the shortest window / 60",
                None,
                MetricType::Gauge,
            )?;
            for (window, n) in windows {
                ConstGauge::new(n as i64).encode(family.encode_family(&WindowLabel { window })?)?;
            }
            let skewed = ConstCounter::new(self.counter.clock_skew_entries());
            skewed.encode(encoder.encode_descriptor(
                "ipcounter_clock_skew_entries",
                "Entries timestamped further ahead than MAX_CLOCK_SKEW, counted at their arrival",
                None,
                skewed.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::Observation;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let om = "# HELP requests Requests.\n# TYPE requests counter\nrequests_total 3\n\
                  # HELP up Up.\n# TYPE up gauge\nup 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total 3\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
    }

    #[test]
    fn exposition_reads_the_counter_at_scrape_time() {
        let store = Arc::new(Counter::in_memory());
        let metrics = Metrics::new(store.clone());
        assert!(
            metrics
                .encode_openmetrics()
                .contains("\nunique_ip_addresses 0\n")
        );
        for ip in ["10.0.0.1", "2001:db8::1"] {
            store
                .record_one(Observation::untimed(ip.parse().unwrap()))
                .unwrap();
        }
        let text = to_prometheus_text(&metrics.encode_openmetrics());
        assert!(text.contains("\nunique_ip_addresses 2\n"), "{text}");
        assert!(text.contains("\nunique_ipv4_addresses 1\n"), "{text}");
        assert!(text.contains("\nunique_ipv6_addresses 1\n"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn routes_outside_the_list_are_other() {
        assert_eq!(ROUTES[Route::of("/logs").0], "/logs");
        assert_eq!(ROUTES[Route::of("/stats").0], "/stats");
        assert_eq!(ROUTES[Route::of("/wp-admin").0], "other");
        assert_eq!(ROUTES[Route::of("other").0], "other");
    }

    #[test]
    fn each_threads_tally_is_added_up_at_scrape_time() {
        let metrics = Metrics::new(Arc::new(Counter::in_memory()));
        let logs = Route::of("/logs");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..250 {
                        metrics.entries_received(2);
                        metrics.request_done(logs, StatusCode::OK, Duration::from_micros(100));
                    }
                    metrics.entries_rejected("invalid_ip", 1);
                    metrics.request_done(logs, StatusCode::BAD_REQUEST, Duration::from_secs(9));
                });
            }
        });
        let text = metrics.encode_openmetrics();
        for line in [
            "ipcounter_log_entries_received_total 2000",
            "ipcounter_log_entries_rejected_total{reason=\"invalid_ip\"} 4",
            "ipcounter_http_requests_total{route=\"/logs\",status=\"200\"} 1000",
            "ipcounter_http_requests_total{route=\"/logs\",status=\"400\"} 4",
            "ipcounter_http_request_duration_seconds_count{route=\"/logs\"} 1004",
            // 100µs lands in the second bucket; 9 s only in +Inf.
            "ipcounter_http_request_duration_seconds_bucket{le=\"0.00005\",route=\"/logs\"} 0",
            "ipcounter_http_request_duration_seconds_bucket{le=\"0.0002\",route=\"/logs\"} 1000",
            "ipcounter_http_request_duration_seconds_bucket{le=\"3.2768\",route=\"/logs\"} 1000",
            "ipcounter_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/logs\"} 1004",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn every_reject_reason_is_exported_from_the_start() {
        let metrics = Metrics::new(Arc::new(Counter::in_memory()));
        let text = metrics.encode_openmetrics();
        for reason in REJECT_REASONS {
            let series = format!("ipcounter_log_entries_rejected_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "{series} missing");
        }
    }
}
