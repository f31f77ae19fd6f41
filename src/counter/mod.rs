//! The counting seam: what the HTTP and command-line layers call to record observations and to
//! read counts, whatever kind of counter is behind it.
//!
//! [`Counter`] owns, for every kind:
//! - recording: [`Counter::record`] takes [`Observation`]s (an address and its event time) and
//!   says how many addresses were new; a request's share of work that may block (a log write)
//!   runs on the caller's thread, and [`Counter::settle`] is the part that waits (a sync of the
//!   log in fsync mode; later a remote store), asynchronously, so no thread that serves
//!   connections is held by it;
//! - recovery gating: until the data directory is read back, records are refused and
//!   [`Counter::wait_recovered`] lets a request wait for it;
//! - reading: [`Counter::counts`] without I/O or locks, and the kind's own metrics
//!   ([`Counter::gauges`]) and readiness ([`Counter::writable`]).
//!
//! The kinds live beside it, one module each: [`exact`], [`shared`] (the exact kind with its
//! changes sent to Redis) and [`approx`] (a HyperLogLog sketch). docs/DESIGN.md says how to add
//! one.

pub mod approx;
pub mod auto;
pub mod clock;
pub mod exact;
mod log;
mod outbox;
pub mod shared;
pub mod windows;

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::wal::{DataDir, RecoveryError, SnapshotDone, StorageError};
use approx::Approx;
use auto::{Auto, AutoSettings};
use clock::{Clock, SystemClock};
use exact::Exact;
use shared::{RedisSettings, Shared};
use windows::WindowSettings;

/// When an address was seen, in whole seconds since the Unix epoch; `None` when its entry gave
/// no time. Times before 1970 are 1 s, times after 2106 the last second `u32` holds.
pub type EventTime = Option<NonZeroU32>;

/// The event time of `seconds` since the Unix epoch, clamped as [`EventTime`] says.
pub fn event_time(seconds: i64) -> EventTime {
    NonZeroU32::new(seconds.clamp(1, i64::from(u32::MAX)) as u32)
}

/// One sighting of an address: what parsing hands the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The client address, IPv4-mapped IPv6 already turned into IPv4.
    pub ip: IpAddr,
    /// When the entry says it was seen.
    pub time: EventTime,
}

impl Observation {
    /// `ip` seen at no time its entry gave.
    pub fn untimed(ip: IpAddr) -> Observation {
        Observation { ip, time: None }
    }
}

/// How many distinct addresses a counter holds, by family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct IPv4 addresses (IPv4-mapped IPv6 addresses count here).
    pub ipv4: u64,
    /// Distinct IPv6 addresses.
    pub ipv6: u64,
}

impl Counts {
    /// Both families together.
    pub fn total(&self) -> u64 {
        self.ipv4 + self.ipv6
    }
}

/// A value a counter kind exports as an unlabelled gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauge {
    /// The metric name.
    pub name: &'static str,
    /// Its HELP text.
    pub help: Cow<'static, str>,
    /// Its value now.
    pub value: u64,
}

/// The kinds of counter. Each is a module of this folder.
#[derive(Debug)]
enum Kind {
    /// Every distinct address kept in memory.
    Exact(Exact),
    /// The exact kind locally, the count shared by every instance on one Redis.
    Shared(Arc<Shared>),
    /// A HyperLogLog sketch per family.
    Approx(Approx),
    /// Exact until a memory budget, then the sketch.
    Auto(Arc<Auto>),
}

/// The one counter of a service or a command; see the module docs.
#[derive(Debug)]
pub struct Counter {
    kind: Kind,
    /// True once records are accepted: at once in memory, after recovery on a data directory.
    /// `recovered` for waiters, `accepting` for the per-record check, which must not lock.
    recovered: watch::Sender<bool>,
    accepting: AtomicBool,
    /// How long [`Counter::wait_recovered`] waits (`REQUEST_TIMEOUT`).
    wait_limit: Duration,
    /// Whether the counts outlive the process (a data directory), which their HELP says.
    persistent: bool,
}

impl Counter {
    /// An exact counter in memory only, without windows: nothing survives the process.
    pub fn in_memory() -> Counter {
        Counter::exact(None, None, Arc::new(SystemClock)).expect("no window thread to start")
    }

    /// An exact counter with `windows` (when set) on `clock`. With `recovery`, it refuses
    /// records until [`Counter::recover`] has read a data directory back, and waits that long
    /// at most for it ([`Counter::wait_recovered`]); without, it takes them at once, in memory.
    pub fn exact(
        windows: Option<&WindowSettings>,
        recovery: Option<Duration>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Counter> {
        Ok(Counter::of(
            Kind::Exact(Exact::new(windows, clock, None)?),
            recovery,
        ))
    }

    /// A shared counter (`STORE=redis`): the exact kind on a data directory, which it waits
    /// for as [`Counter::exact`] does, sending its changes to Redis.
    pub fn shared(
        windows: Option<&WindowSettings>,
        recovery: Duration,
        clock: Arc<dyn Clock>,
        redis: RedisSettings,
    ) -> io::Result<Counter> {
        let shared = Shared::new(windows, clock, redis)?;
        Ok(Counter::of(Kind::Shared(shared), Some(recovery)))
    }

    fn of(kind: Kind, recovery: Option<Duration>) -> Counter {
        Counter {
            kind,
            recovered: watch::Sender::new(recovery.is_none()),
            accepting: AtomicBool::new(recovery.is_none()),
            wait_limit: recovery.unwrap_or_default(),
            persistent: recovery.is_some(),
        }
    }

    /// An approximate counter (`COUNT_MODE=approx`) of `2^lg_k` registers a family, with
    /// `windows` (when set) on `clock`, waiting for its data directory as [`Counter::exact`]
    /// does with `recovery`.
    pub fn approx(
        lg_k: u8,
        windows: Option<&WindowSettings>,
        recovery: Option<Duration>,
        clock: Arc<dyn Clock>,
    ) -> Counter {
        let approx = Approx::new(lg_k, windows, clock, recovery.is_some());
        Counter::of(Kind::Approx(approx), recovery)
    }

    /// An automatic counter (`COUNT_MODE=auto`): exact, with `windows` (when set) on `clock`,
    /// until the exact structures reach `settings.budget`, then the sketch; waiting for its
    /// data directory as [`Counter::exact`] does with `recovery`.
    pub fn auto(
        settings: AutoSettings,
        windows: Option<&WindowSettings>,
        recovery: Option<Duration>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Counter> {
        let auto = Auto::new(settings, windows, clock, recovery.is_some())?;
        Ok(Counter::of(Kind::Auto(auto), recovery))
    }

    /// With a shared store: whether it answers, and the changes not sent to it yet.
    pub fn shared_status(&self) -> Option<(bool, u64)> {
        match &self.kind {
            Kind::Exact(_) | Kind::Approx(_) | Kind::Auto(_) => None,
            Kind::Shared(shared) => Some(shared.status()),
        }
    }

    /// `exact` or `approx`, and the counts' relative standard error (0 when exact).
    pub fn mode(&self) -> (&'static str, f64) {
        match &self.kind {
            Kind::Exact(_) | Kind::Shared(_) => ("exact", 0.0),
            Kind::Approx(approx) => ("approx", approx.relative_standard_error()),
            Kind::Auto(auto) => auto.mode(),
        }
    }

    /// Reads `data_dir` back and starts its log (blocking: seconds for tens of millions of
    /// addresses); records are accepted from then on.
    pub fn recover(&self, data_dir: &DataDir) -> Result<(), RecoveryError> {
        match &self.kind {
            Kind::Exact(exact) => exact.recover(data_dir)?,
            Kind::Shared(shared) => shared.recover(data_dir)?,
            Kind::Approx(approx) => approx.recover(data_dir)?,
            Kind::Auto(auto) => auto.recover(data_dir)?,
        }
        self.accepting.store(true, Ordering::Release);
        self.recovered.send_replace(true);
        Ok(())
    }

    /// Whether the data directory is still being read back (the counts are partial until then).
    pub fn recovering(&self) -> bool {
        !self.accepting.load(Ordering::Acquire)
    }

    /// Waits (at most `REQUEST_TIMEOUT`) for recovery to finish, so that a client that arrives
    /// during a restart is answered late rather than refused.
    pub async fn wait_recovered(&self) -> Result<(), StorageError> {
        if !self.recovering() {
            return Ok(());
        }
        let mut recovered = self.recovered.subscribe();
        match tokio::time::timeout(self.wait_limit, recovered.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StorageError::Recovering),
        }
    }

    /// Records `observations` all together or not at all; returns how many addresses were
    /// new. May block on a log write: call it off the runtime for a large batch. What it
    /// recorded is acknowledged once [`Counter::settle`] returns.
    pub fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        if self.recovering() {
            return Err(StorageError::Recovering);
        }
        match &self.kind {
            Kind::Exact(exact) => exact.record(observations),
            Kind::Shared(shared) => shared.record(observations),
            Kind::Approx(approx) => approx.record(observations),
            Kind::Auto(auto) => auto.record(observations),
        }
    }

    /// Records one observation; whether its address was new. As [`Counter::record`].
    pub fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        if self.recovering() {
            return Err(StorageError::Recovering);
        }
        match &self.kind {
            Kind::Exact(exact) => exact.record_one(observation),
            Kind::Shared(shared) => shared.record_one(observation),
            Kind::Approx(approx) => approx.record_one(observation),
            Kind::Auto(auto) => auto.record_one(observation),
        }
    }

    /// Returns once everything recorded so far, and everything a record found already
    /// counted, is as durable as `DURABILITY` promises: at once unless it is `fsync`.
    pub async fn settle(&self) -> Result<(), StorageError> {
        match &self.kind {
            Kind::Exact(exact) => exact.settle().await,
            Kind::Shared(shared) => shared.settle().await,
            Kind::Approx(approx) => approx.settle().await,
            Kind::Auto(auto) => auto.settle().await,
        }
    }

    /// The distinct counts, read in O(1) without I/O; partial while recovering.
    pub fn counts(&self) -> Counts {
        match &self.kind {
            Kind::Exact(exact) => exact.counts(),
            Kind::Shared(shared) => shared.counts(),
            Kind::Approx(approx) => approx.counts(),
            Kind::Auto(auto) => auto.counts(),
        }
    }

    /// Each window's label and count now, shortest first; none with windows off.
    pub fn windows(&self) -> Vec<(String, u64)> {
        match &self.kind {
            Kind::Exact(exact) => exact.windows(),
            Kind::Shared(shared) => shared.windows(),
            Kind::Approx(approx) => approx.windows(),
            Kind::Auto(auto) => auto.windows(),
        }
    }

    /// Entries whose time was further ahead than `MAX_CLOCK_SKEW` (counted at arrival).
    pub fn clock_skew_entries(&self) -> u64 {
        match &self.kind {
            Kind::Exact(exact) => exact.clock_skew_entries(),
            Kind::Shared(shared) => shared.clock_skew_entries(),
            Kind::Approx(approx) => approx.clock_skew_entries(),
            Kind::Auto(auto) => auto.clock_skew_entries(),
        }
    }

    /// Heap bytes held by the counting structures right now.
    pub fn memory_bytes(&self) -> usize {
        match &self.kind {
            Kind::Exact(exact) => exact.memory_bytes(),
            Kind::Shared(shared) => shared.memory_bytes(),
            Kind::Approx(approx) => approx.memory_bytes(),
            Kind::Auto(auto) => auto.memory_bytes(),
        }
    }

    /// Whether records can be made durable now (`/ready`): false while recovering, and while
    /// the data directory refuses writes.
    pub fn writable(&self) -> bool {
        !self.recovering()
            && match &self.kind {
                Kind::Exact(exact) => exact.writable(),
                Kind::Shared(shared) => shared.writable(),
                Kind::Approx(approx) => approx.writable(),
                Kind::Auto(auto) => auto.writable(),
            }
    }

    /// The gauges for `/metrics`: the counts, then the kind's own (its memory, its data
    /// directory's state).
    pub fn gauges(&self) -> Vec<Gauge> {
        let since = match (&self.kind, self.persistent) {
            (Kind::Shared(_), _) => "by every instance sharing this Redis key prefix",
            (_, true) => "since the data directory was created",
            (_, false) => "since service start",
        };
        let counts = self.counts();
        let mut gauges = vec![
            Gauge {
                name: "unique_ip_addresses",
                help: Cow::Owned(format!("Total number of unique IP addresses seen {since}")),
                value: counts.total(),
            },
            Gauge {
                name: "unique_ipv4_addresses",
                help: Cow::Owned(format!("Unique IPv4 addresses seen {since}")),
                value: counts.ipv4,
            },
            Gauge {
                name: "unique_ipv6_addresses",
                help: Cow::Owned(format!("Unique IPv6 addresses seen {since}")),
                value: counts.ipv6,
            },
        ];
        gauges.push(Gauge {
            name: "ipcounter_store_memory_bytes",
            help: "Heap bytes held by the counting structures".into(),
            value: self.memory_bytes() as u64,
        });
        gauges.extend(match &self.kind {
            Kind::Exact(exact) => exact.gauges(),
            Kind::Shared(shared) => shared.gauges(),
            Kind::Approx(approx) => approx.gauges(),
            Kind::Auto(auto) => auto.gauges(),
        });
        gauges
    }

    /// Writes a snapshot now, when there is a data directory; for tools that prepare one
    /// (`examples/gen_data_dir.rs`).
    pub fn snapshot(&self) -> io::Result<Option<SnapshotDone>> {
        match &self.kind {
            Kind::Exact(exact) => exact.snapshot(),
            Kind::Shared(shared) => shared.snapshot(),
            Kind::Approx(approx) => approx.snapshot(),
            Kind::Auto(auto) => auto.snapshot(),
        }
    }

    /// Stops the log's threads and syncs it: for a clean shutdown, after the last request.
    pub fn close(&self) -> io::Result<()> {
        match &self.kind {
            Kind::Exact(exact) => exact.close(),
            Kind::Shared(shared) => shared.close(),
            Kind::Approx(approx) => approx.close(),
            Kind::Auto(auto) => auto.close(),
        }
    }
}
