//! Everything Prometheus sees: the metrics listener's router, the instruments the ingest path
//! updates, and the values read at scrape time (the store's counts and the `process_*` family).
//!
//! Instruments come from `prometheus-client`, which writes OpenMetrics text. A scraper that does
//! not ask for OpenMetrics gets the Prometheus text format 0.0.4, derived from the same output by
//! [`to_prometheus_text`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::ingest::{self, AppState};
use crate::store::Store;

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every reason a log entry can be rejected for; each gets a series from the start, so that
/// `rate()` sees the first rejection.
const REJECT_REASONS: [&str; 7] = [
    "invalid_json",
    "missing_ip",
    "invalid_ip",
    "invalid_timestamp",
    "body_too_large",
    "unsupported_media_type",
    "invalid_body",
];

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

/// The registry and the instruments that request handling updates.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    entries_received: Counter,
    entries_rejected: Family<ReasonLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabel, Histogram>,
}

impl Metrics {
    /// Registers every metric; `store` is read on each scrape.
    pub fn new(store: Arc<Store>) -> Self {
        let mut registry = Registry::default();
        let entries_received = Counter::default();
        registry.register(
            "ipcounter_log_entries_received",
            "Log entries received on POST /logs, valid or not",
            entries_received.clone(),
        );
        let entries_rejected = Family::<ReasonLabel, Counter>::default();
        for reason in REJECT_REASONS {
            entries_rejected.get_or_create_owned(&ReasonLabel { reason });
        }
        registry.register(
            "ipcounter_log_entries_rejected",
            "Log entries rejected, by reason (the error code of the reply)",
            entries_rejected.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ipcounter_http_requests",
            "HTTP requests answered by the ingest listener, by route and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            // 50µs .. ~6.5s
            Histogram::new(exponential_buckets(0.00005, 4.0, 9))
        });
        registry.register(
            "ipcounter_http_request_duration_seconds",
            "Time from request to response on the ingest listener, by route",
            durations.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        registry.register_collector(Box::new(ProcessCollector::new()));
        Metrics {
            registry,
            entries_received,
            entries_rejected,
            requests,
            durations,
        }
    }

    /// Counts `n` log entries received.
    pub fn entries_received(&self, n: u64) {
        self.entries_received.inc_by(n);
    }

    /// Counts `n` log entries rejected for `reason` (an error code).
    pub fn entries_rejected(&self, reason: &'static str, n: u64) {
        self.entries_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    fn request_done(&self, route: &'static str, status: StatusCode, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                status: status.as_u16(),
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
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

/// The metrics listener's router: `GET /metrics` and `GET /health`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(scrape).fallback(|| async { ApiError::MethodNotAllowed("GET, HEAD") }),
        )
        .route(
            "/health",
            get(ingest::health).fallback(|| async { ApiError::MethodNotAllowed("GET, HEAD") }),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

async fn scrape(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state.metrics.encode_openmetrics();
    let (content_type, body) = if wants_openmetrics {
        (OPENMETRICS_TEXT, text)
    } else {
        (PROMETHEUS_TEXT, to_prometheus_text(&text))
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// Middleware for the ingest router: counts each request by route and status and times it.
/// Routes are named from a fixed list so that scanners probing random paths cannot create
/// unbounded label values.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        "/logs" => "/logs",
        "/health" => "/health",
        "/ready" => "/ready",
        "/stats" => "/stats",
        _ => "other",
    };
    let start = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request_done(route, response.status(), start.elapsed());
    response
}

/// The store's counts, read on each scrape so the gauge is never out of step with `/stats`.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<Store>,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.store.counts();
        let gauges = [
            (
                "unique_ip_addresses",
                "Total number of unique IP addresses seen since service start",
                counts.total(),
            ),
            (
                "unique_ipv4_addresses",
                "Unique IPv4 addresses seen since service start",
                counts.ipv4,
            ),
            (
                "unique_ipv6_addresses",
                "Unique IPv6 addresses seen since service start",
                counts.ipv6,
            ),
            (
                "ipcounter_store_memory_bytes",
                "Heap bytes held by the counting structures",
                self.store.memory_bytes() as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The standard `process_*` metrics, read from `/proc` on each scrape.
#[derive(Debug)]
struct ProcessCollector {
    start_time_seconds: f64,
}

impl ProcessCollector {
    fn new() -> Self {
        let start_time_seconds = procfs::process::Process::myself()
            .and_then(|p| p.stat())
            .and_then(|stat| {
                let boot = procfs::boot_time_secs()?;
                Ok(boot as f64 + stat.starttime as f64 / procfs::ticks_per_second() as f64)
            })
            .unwrap_or(0.0);
        ProcessCollector { start_time_seconds }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        )?;
        // /proc can be unreadable (hardened containers): then the rest is simply left out.
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = stat.rss * procfs::page_size();
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.vsize as f64,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process.",
                stat.num_threads as f64,
            )?;
        }
        if let Ok(fds) = me.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                fds as f64,
            )?;
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn exposition_reads_the_store_at_scrape_time() {
        let store = Arc::new(Store::exact());
        let metrics = Metrics::new(store.clone());
        assert!(
            metrics
                .encode_openmetrics()
                .contains("\nunique_ip_addresses 0\n")
        );
        store.insert("10.0.0.1".parse().unwrap());
        store.insert("2001:db8::1".parse().unwrap());
        let text = to_prometheus_text(&metrics.encode_openmetrics());
        assert!(text.contains("\nunique_ip_addresses 2\n"), "{text}");
        assert!(text.contains("\nunique_ipv4_addresses 1\n"), "{text}");
        assert!(text.contains("\nunique_ipv6_addresses 1\n"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn every_reject_reason_is_exported_from_the_start() {
        let metrics = Metrics::new(Arc::new(Store::exact()));
        let text = metrics.encode_openmetrics();
        for reason in REJECT_REASONS {
            let series = format!("ipcounter_log_entries_rejected_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "{series} missing");
        }
    }
}
