//! The automatic kind (`COUNT_MODE=auto`): the exact kind until its structures reach
//! `MEMORY_BUDGET`, then, once, the approximate kind, seeded from the exact set.
//!
//! A thread of its own (`ip-counter-auto`) checks the exact kind's memory ten times a second,
//! and switches: it fills the sketches from every member and its time while the exact kind
//! goes on counting (what it records meanwhile goes into the sketches too), then holds records
//! off (they wait, they are not refused) only to take the exact counts as the floor and, with a
//! data directory, write the sketches' snapshot before any record is counted into them, so that
//! nothing acknowledged after the switch depends on a log the next start could read under
//! another key. Then the exact set is dropped. A switch whose snapshot fails is undone (the
//! exact kind goes on counting) and tried again later.
//!
//! The log is one [`Wal`] over [`AutoState`], whichever kind is counting: the two kinds' log
//! records are laid out alike (an address, with windows its time), so records written just
//! before or after the switch read back into either, and a directory is read as the kind its
//! snapshot is. The approximate kind never reports less than the exact counts at the switch
//! ([`ApproxState::switched`]), so no count goes down across it.

use std::io::{self, Seek, Write};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::approx::{Approx, ApproxState};
use super::clock::Clock;
use super::exact::{Exact, ExactState};
use super::log::Log;
use super::windows::WindowSettings;
use super::{Counts, Gauge, Observation};
use crate::wal::format::{SnapshotWriter, Version};
use crate::wal::{DataDir, Durable, RecoveryError, SnapshotDone, StorageError};

/// How often the exact kind's memory is checked against the budget.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long after a switch that failed it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What `COUNT_MODE=auto` is told.
#[derive(Debug, Clone)]
pub struct AutoSettings {
    /// `HLL_PRECISION` of the sketch it switches to.
    pub lg_k: u8,
    /// `MEMORY_BUDGET`: the exact structures' bytes at which it switches.
    pub budget: u64,
}

/// The kind counting now.
#[derive(Debug)]
enum Phase {
    /// With `seeding` while the sketch to switch to is filled: what is recorded goes into it
    /// too.
    Exact {
        exact: Exact<AutoState>,
        seeding: Option<Arc<ApproxState>>,
    },
    Approx(Approx<AutoState>),
}

/// The state the log keeps: the exact kind's until the switch, the approximate kind's after.
#[derive(Debug)]
pub struct AutoState {
    held: RwLock<Held>,
    /// What an approximate state read back from a directory is made with.
    lg_k: u8,
    windows: Option<WindowSettings>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone)]
enum Held {
    Exact(Arc<ExactState>),
    Approx(Arc<ApproxState>),
}

/// The exact kind's format version of a record laid out as `version`'s.
fn as_exact(version: Version) -> Version {
    match version {
        3 => 1,
        4 => 2,
        v => v,
    }
}

/// The approximate kind's format version of a record laid out as `version`'s.
fn as_approx(version: Version) -> Version {
    match version {
        1 => 3,
        2 => 4,
        v => v,
    }
}

impl AutoState {
    fn held(&self) -> Held {
        // Recursive: a snapshot reads it more than once while a switch may be waiting.
        self.held.read_recursive().clone()
    }
}

impl Durable for AutoState {
    fn version(&self) -> Version {
        match self.held() {
            Held::Exact(s) => s.version(),
            Held::Approx(s) => s.version(),
        }
    }

    fn record_len(version: Version) -> Option<usize> {
        ExactState::record_len(as_exact(version))
    }

    fn sections(version: Version) -> Option<[usize; 2]> {
        ExactState::sections(version).or_else(|| ApproxState::sections(version))
    }

    fn replay(&self, version: Version, records: &[u8]) {
        match self.held() {
            Held::Exact(s) => s.replay(as_exact(version), records),
            Held::Approx(s) => s.replay(as_approx(version), records),
        }
    }

    fn load(&self, version: Version, section: usize, records: &[u8]) {
        if ApproxState::sections(version).is_some()
            && let Held::Exact(_) = self.held()
        {
            // A directory that switched already: read it as the sketch it is.
            let state =
                ApproxState::new(self.lg_k, self.windows.as_ref(), self.clock.clone(), true);
            *self.held.write() = Held::Approx(Arc::new(state));
        }
        match self.held() {
            Held::Exact(s) => s.load(version, section, records),
            Held::Approx(s) => s.load(version, section, records),
        }
    }

    fn snapshot<W: Write + Seek>(&self, out: &mut SnapshotWriter<W>) -> io::Result<()> {
        // The version the writer was made with: a switch in between fails this snapshot, which
        // leaves the old one and every log in place.
        let (version, held) = {
            let held = self.held.read_recursive();
            (out.version(), held.clone())
        };
        match held {
            Held::Exact(s) if s.version() == version => s.snapshot(out),
            Held::Approx(s) if s.version() == version => s.snapshot(out),
            _ => Err(io::Error::other(
                "COUNT_MODE=auto switched during the snapshot",
            )),
        }
    }

    fn describe(&self) -> String {
        match self.held() {
            Held::Exact(s) => s.describe(),
            Held::Approx(s) => s.describe(),
        }
    }
}

/// The automatic kind; see the module docs.
#[derive(Debug)]
pub struct Auto {
    phase: RwLock<Phase>,
    state: Arc<AutoState>,
    wal: Log<AutoState>,
    settings: AutoSettings,
    persistent: bool,
    /// Whether the switch may be made: after recovery, and not before a failed one's retry.
    ready_at: Mutex<Option<Instant>>,
}

impl Auto {
    /// An empty exact counter that switches past `settings.budget`, with `windows` on `clock`;
    /// `persistent` when a data directory will be read. Starts the thread that checks.
    pub(super) fn new(
        settings: AutoSettings,
        windows: Option<&WindowSettings>,
        clock: Arc<dyn Clock>,
        persistent: bool,
    ) -> io::Result<Arc<Auto>> {
        let exact: Exact<AutoState> = Exact::new(windows, clock.clone(), None)?;
        let auto = Arc::new(Auto {
            state: Arc::new(AutoState {
                held: RwLock::new(Held::Exact(exact.state().clone())),
                lg_k: settings.lg_k,
                windows: windows.cloned(),
                clock,
            }),
            phase: RwLock::new(Phase::Exact {
                exact,
                seeding: None,
            }),
            wal: Log::new(),
            settings,
            persistent,
            ready_at: Mutex::new((!persistent).then(Instant::now)),
        });
        let weak = Arc::downgrade(&auto);
        std::thread::Builder::new()
            .name("ip-counter-auto".into())
            .spawn(move || watch_budget(weak))?;
        Ok(auto)
    }

    /// Reads `data_dir` back, as the kind its snapshot is, and starts the log.
    pub(super) fn recover(&self, data_dir: &DataDir) -> Result<(), RecoveryError> {
        let wal = data_dir.recover(self.state.clone())?;
        self.wal.start(wal.clone());
        let mut phase = self.phase.write();
        match self.state.held() {
            Held::Approx(state) => {
                state.read_back();
                let approx = Approx::of(state);
                approx.start(wal);
                *phase = Phase::Approx(approx);
            }
            Held::Exact(_) => match &*phase {
                Phase::Exact { exact, .. } => exact.start(wal),
                Phase::Approx(_) => unreachable!("nothing switches before recovery"),
            },
        }
        *self.ready_at.lock() = Some(Instant::now());
        Ok(())
    }

    /// Switches if the exact kind has reached the budget and a switch may be made now;
    /// whether it is (or already was) approximate.
    fn check(&self) -> bool {
        let due = match &*self.phase.read() {
            Phase::Approx(_) => return true,
            Phase::Exact { exact, .. } => exact.memory_bytes() as u64 >= self.settings.budget,
        };
        let ready = self.ready_at.lock().is_some_and(|at| Instant::now() >= at);
        if !(due && ready) {
            return false;
        }
        match self.switch() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    retry_in_s = RETRY_AFTER.as_secs(),
                    "COUNT_MODE=auto could not write the sketch's snapshot; counting stays exact"
                );
                *self.ready_at.lock() = Some(Instant::now() + RETRY_AFTER);
                false
            }
        }
    }

    /// The switch; see the module docs. Records go on while the sketch is seeded, and wait
    /// only while its snapshot is written.
    fn switch(&self) -> io::Result<()> {
        let started = Instant::now();
        let state = Arc::new(ApproxState::switched(
            self.settings.lg_k,
            self.state.windows.as_ref(),
            self.state.clock.clone(),
            self.persistent,
        ));
        match &mut *self.phase.write() {
            Phase::Exact { seeding, .. } => *seeding = Some(state.clone()),
            Phase::Approx(_) => return Ok(()),
        }
        // Every member so far; what is recorded meanwhile goes in as it is recorded. A sketch
        // takes each address once whatever the order, so the two together hold the set.
        if let Phase::Exact { exact, .. } = &*self.phase.read() {
            exact.for_each_member(|members| state.seed(members));
        }
        let seeded = started.elapsed();

        let mut phase = self.phase.write();
        let held_from = Instant::now();
        let Phase::Exact { exact, seeding } = &mut *phase else {
            unreachable!("only this thread switches");
        };
        let from = exact.counts();
        state.continue_from(from, exact.clock_skew_entries());
        let approx = Approx::of(state.clone());
        let before = std::mem::replace(&mut *self.state.held.write(), Held::Approx(state));
        if let Some(wal) = self.wal.get() {
            if let Err(e) = wal.snapshot() {
                *self.state.held.write() = before;
                *seeding = None;
                return Err(e);
            }
            approx.start(wal.clone());
        }
        drop(before);
        let exact = std::mem::replace(&mut *phase, Phase::Approx(approx));
        drop(phase);
        let held = held_from.elapsed();
        let memory = exact_memory(&exact);
        drop(exact);
        tracing::info!(
            exact_ipv4 = from.ipv4,
            exact_ipv6 = from.ipv6,
            exact_bytes = memory,
            budget = self.settings.budget,
            seeding_ms = seeded.as_millis() as u64,
            records_held_ms = held.as_millis() as u64,
            "COUNT_MODE=auto switched to the sketch"
        );
        Ok(())
    }

    pub(super) fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        match &*self.phase.read() {
            Phase::Exact { exact, seeding } => {
                let new = exact.record(observations)?;
                if let Some(sketch) = seeding {
                    sketch.seed_observations(observations);
                }
                Ok(new)
            }
            Phase::Approx(approx) => approx.record(observations),
        }
    }

    pub(super) fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        match &*self.phase.read() {
            Phase::Exact { exact, seeding } => {
                let new = exact.record_one(observation)?;
                if let Some(sketch) = seeding {
                    sketch.seed_observations(&[observation]);
                }
                Ok(new)
            }
            Phase::Approx(approx) => approx.record_one(observation),
        }
    }

    pub(super) async fn settle(&self) -> Result<(), StorageError> {
        self.wal.settle().await
    }

    pub(super) fn counts(&self) -> Counts {
        match &*self.phase.read() {
            Phase::Exact { exact, .. } => exact.counts(),
            Phase::Approx(approx) => approx.counts(),
        }
    }

    /// `exact` before the switch, `approx` and its relative standard error after.
    pub(super) fn mode(&self) -> (&'static str, f64) {
        match &*self.phase.read() {
            Phase::Exact { .. } => ("exact", 0.0),
            Phase::Approx(approx) => ("approx", approx.relative_standard_error()),
        }
    }

    pub(super) fn windows(&self) -> Vec<(String, u64)> {
        match &*self.phase.read() {
            Phase::Exact { exact, .. } => exact.windows(),
            Phase::Approx(approx) => approx.windows(),
        }
    }

    pub(super) fn clock_skew_entries(&self) -> u64 {
        match &*self.phase.read() {
            Phase::Exact { exact, .. } => exact.clock_skew_entries(),
            Phase::Approx(approx) => approx.clock_skew_entries(),
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        match &*self.phase.read() {
            Phase::Exact { exact, .. } => exact.memory_bytes(),
            Phase::Approx(approx) => approx.memory_bytes(),
        }
    }

    pub(super) fn writable(&self) -> bool {
        self.wal.writable()
    }

    /// The data directory's gauges, and the budget.
    pub(super) fn gauges(&self) -> Vec<Gauge> {
        let mut gauges = self.wal.gauges();
        gauges.push(Gauge {
            name: "ipcounter_memory_budget_bytes",
            help: "MEMORY_BUDGET: the exact structures' size at which COUNT_MODE=auto switches to the sketch".into(),
            value: self.settings.budget,
        });
        gauges
    }

    pub(super) fn snapshot(&self) -> io::Result<Option<SnapshotDone>> {
        self.wal.snapshot()
    }

    pub(super) fn close(&self) -> io::Result<()> {
        self.wal.close()
    }
}

fn exact_memory(phase: &Phase) -> usize {
    match phase {
        Phase::Exact { exact, .. } => exact.memory_bytes(),
        Phase::Approx(_) => 0,
    }
}

/// The thread that switches once the budget is reached; it ends after the switch, or with
/// the counter.
fn watch_budget(auto: Weak<Auto>) {
    loop {
        std::thread::sleep(CHECK_EVERY);
        let Some(auto) = auto.upgrade() else {
            return;
        };
        if auto.check() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::counter::clock::SystemClock;

    fn v4(i: u32) -> Observation {
        Observation::untimed(IpAddr::V4(Ipv4Addr::from_bits(
            i.wrapping_mul(2_654_435_761),
        )))
    }

    #[test]
    fn it_switches_once_past_the_budget_and_the_count_never_goes_down() {
        let settings = AutoSettings {
            lg_k: 10,
            budget: 1 << 20,
        };
        let auto = Auto::new(settings, None, Arc::new(SystemClock), false).unwrap();
        let mut last = 0;
        let mut i = 0;
        while auto.mode().0 == "exact" {
            let batch: Vec<Observation> = (i..i + 10_000).map(v4).collect();
            auto.record(&batch).unwrap();
            i += 10_000;
            let now = auto.counts().total();
            assert!(now >= last);
            last = now;
            auto.check();
            assert!(i < 10_000_000, "never switched");
        }
        // No less than the exact count at the switch, and the sketch's memory from then on.
        assert!(
            auto.counts().total() >= last,
            "{} < {last}",
            auto.counts().total()
        );
        assert!(auto.memory_bytes() < 1 << 14, "{}", auto.memory_bytes());
        let more: Vec<Observation> = (i..i + 1_000_000).map(v4).collect();
        for batch in more.chunks(10_000) {
            auto.record(batch).unwrap();
        }
        let estimate = auto.counts().total() as f64;
        let truth = f64::from(i + 1_000_000);
        let rse = 1.04 / 32.0;
        assert!(
            (estimate / truth - 1.0).abs() < 3.0 * rse,
            "{estimate} for {truth}"
        );
    }

    #[test]
    fn what_is_recorded_while_the_sketch_is_seeded_is_in_it() {
        let settings = AutoSettings {
            lg_k: 14,
            budget: 0,
        };
        let auto = Auto::new(settings, None, Arc::new(SystemClock), false).unwrap();
        *auto.ready_at.lock() = None; // only this test switches it
        let first: Vec<Observation> = (0..300_000).map(v4).collect();
        auto.record(&first).unwrap();
        let n = 600_000;
        std::thread::scope(|scope| {
            let recorder = scope.spawn(|| {
                let rest: Vec<Observation> = (300_000..n).map(v4).collect();
                for batch in rest.chunks(1_000) {
                    auto.record(batch).unwrap();
                }
            });
            std::thread::sleep(Duration::from_millis(1));
            auto.switch().unwrap();
            recorder.join().unwrap();
        });
        assert_eq!(auto.mode().0, "approx");
        let estimate = auto.counts().total() as f64;
        let rse = 1.04 / 128.0;
        assert!(
            (estimate / f64::from(n) - 1.0).abs() < 3.0 * rse,
            "{estimate} for {n}"
        );
    }
}
