//! The shared kind (`STORE=redis`): many instances, one count. Each instance keeps the exact
//! kind ([`Exact`]) as its dedupe cache and backlog: an address goes to Redis only when the
//! local log takes it (new, or seen at a later time step), so at most once a step. The counts
//! every instance reports are Redis's, read four times a second.
//!
//! Keys, for `REDIS_KEY_PREFIX` `p` and shard `s` of [`SHARDS`] (by a hash of the address):
//! `{p:s}:4` and `{p:s}:6`, sorted sets of address bytes to the start of the address's latest
//! time step in seconds, written with `ZADD GT` so a score only moves forward. The total is the
//! sum of the `ZCARD`s, a window the sum of the `ZCOUNT`s from its first step. Every key of a
//! shard carries the same hash tag, so nothing ever needs a cross-slot command.
//!
//! One thread of its own (`ip-counter-redis`, a current-thread runtime) sends and reads; no
//! thread that serves connections ever waits for Redis. While Redis cannot be reached, ingest
//! goes on acknowledging what the local data directory holds; the outbox is dropped and counted
//! as backlog, and once Redis answers again the whole local set is sent (idempotent: `ZADD GT`),
//! which also restores what a Redis restarted empty lost. The counts reported never go down.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionLike;

use super::exact::Exact;
use super::outbox::Outbox;
use super::windows::WindowSettings;
use super::{Counts, Gauge, Observation};
use crate::wal::{DataDir, RecoveryError, StorageError};

/// Shards of each family's sorted sets: enough to spread a Cluster's slots, few enough that
/// a read of every count is one small pipeline.
pub const SHARDS: u64 = 16;

/// How often the outbox is sent.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// How often the shared counts are read (SPEC: at most 1 s old, including the send before).
const READ_EVERY: Duration = Duration::from_millis(250);
/// Members a pipeline carries at most.
const PIPELINE: usize = 10_000;
/// Waits between attempts to reach Redis: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);
/// Connecting and each reply: past these Redis counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// `REDIS_URL` and `REDIS_KEY_PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URLs (TLS, verified against the system's roots, or the PEM
    /// file `SSL_CERT_FILE` names): one Redis, or several seed nodes of a Redis Cluster.
    pub urls: Vec<String>,
    /// The prefix of every key.
    pub prefix: String,
}

/// The counts as Redis last gave them.
#[derive(Debug, Default, Clone)]
struct View {
    counts: Counts,
    windows: Vec<(String, u64)>,
}

/// What the sync thread and the counter share.
#[derive(Debug)]
struct Link {
    settings: RedisSettings,
    windows: Option<WindowSettings>,
    outbox: Arc<Outbox>,
    /// Set once the data directory is read back: nothing is sent before.
    recovered: AtomicBool,
    up: AtomicBool,
    view: Mutex<Option<View>>,
    /// The highest counts reported, so that none goes down.
    reported: [AtomicU64; 2],
    closing: AtomicBool,
}

/// The shared kind: the exact kind locally, Redis for the counts.
#[derive(Debug)]
pub struct Shared {
    local: Exact,
    link: Arc<Link>,
}

impl Shared {
    /// The exact kind with `windows`, whose changes are sent to the Redis of `settings` once
    /// [`Shared::recover`] has read the data directory back.
    pub(super) fn new(
        windows: Option<&WindowSettings>,
        clock: Arc<dyn super::clock::Clock>,
        settings: RedisSettings,
    ) -> std::io::Result<Arc<Shared>> {
        let outbox = Arc::new(Outbox::default());
        let shared = Arc::new(Shared {
            local: Exact::new(windows, clock, Some(outbox.clone()))?,
            link: Arc::new(Link {
                settings,
                windows: windows.cloned(),
                outbox,
                recovered: AtomicBool::new(false),
                up: AtomicBool::new(false),
                view: Mutex::new(None),
                reported: [AtomicU64::new(0), AtomicU64::new(0)],
                closing: AtomicBool::new(false),
            }),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("ip-counter-redis".into())
            .spawn(move || sync(weak))?;
        Ok(shared)
    }

    /// Reads the data directory back; then the sync thread sends it all to Redis.
    pub(super) fn recover(&self, data_dir: &DataDir) -> Result<(), RecoveryError> {
        self.local.recover(data_dir)?;
        self.link.recovered.store(true, Ordering::Release);
        Ok(())
    }

    pub(super) fn record(&self, observations: &[Observation]) -> Result<u64, StorageError> {
        self.local.record(observations)
    }

    pub(super) fn record_one(&self, observation: Observation) -> Result<bool, StorageError> {
        self.local.record_one(observation)
    }

    pub(super) async fn settle(&self) -> Result<(), StorageError> {
        self.local.settle().await
    }

    /// Redis's counts, never below the local set's nor below any reported before.
    pub(super) fn counts(&self) -> Counts {
        let local = self.local.counts();
        let shared = self.link.view.lock().as_ref().map(|v| v.counts);
        let shared = shared.unwrap_or_default();
        let [v4, v6] = &self.link.reported;
        let ipv4 = local.ipv4.max(shared.ipv4);
        let ipv6 = local.ipv6.max(shared.ipv6);
        Counts {
            ipv4: v4.fetch_max(ipv4, Ordering::Relaxed).max(ipv4),
            ipv6: v6.fetch_max(ipv6, Ordering::Relaxed).max(ipv6),
        }
    }

    /// Redis's windows once read; the local ones until then.
    pub(super) fn windows(&self) -> Vec<(String, u64)> {
        let local = self.local.windows();
        match self.link.view.lock().as_ref() {
            Some(view) if view.windows.len() == local.len() => local
                .into_iter()
                .zip(&view.windows)
                .map(|((label, mine), (_, all))| (label, mine.max(*all)))
                .collect(),
            _ => local,
        }
    }

    pub(super) fn clock_skew_entries(&self) -> u64 {
        self.local.clock_skew_entries()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.local.memory_bytes()
    }

    pub(super) fn writable(&self) -> bool {
        self.local.writable()
    }

    /// Whether Redis answers, and the changes it has not been sent yet.
    pub(super) fn status(&self) -> (bool, u64) {
        (
            self.link.up.load(Ordering::Relaxed),
            self.link.outbox.backlog(),
        )
    }

    pub(super) fn gauges(&self) -> Vec<Gauge> {
        let (up, backlog) = self.status();
        let mut gauges = self.local.gauges();
        gauges.extend([
            Gauge {
                name: "ipcounter_redis_up",
                help: "1 while the shared store (Redis) answers, else 0".into(),
                value: u64::from(up),
            },
            Gauge {
                name: "ipcounter_redis_backlog_entries",
                help: "Addresses taken locally that Redis has not been sent yet".into(),
                value: backlog,
            },
        ]);
        gauges
    }

    pub(super) fn snapshot(&self) -> std::io::Result<Option<crate::wal::SnapshotDone>> {
        self.local.snapshot()
    }

    /// Stops the sync thread after one last send of the outbox, then closes the local log.
    pub(super) fn close(&self) -> std::io::Result<()> {
        self.link.closing.store(true, Ordering::Relaxed);
        self.local.close()
    }
}

/// The sync thread: connect, send the whole local set, then the outbox every
/// [`FLUSH_EVERY`] and the counts every [`READ_EVERY`]; on any error, start over. Ends when
/// the counter is dropped or closed.
fn sync(shared: Weak<Shared>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the Redis thread; the count stays local");
            return;
        }
    };
    // rediss://: redis-rs builds its TLS config from the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async move {
        let mut delay = FIRST_RETRY;
        loop {
            let Some(link) = shared.upgrade().map(|s| s.link.clone()) else {
                return;
            };
            if link.closing.load(Ordering::Relaxed) {
                return;
            }
            if !link.recovered.load(Ordering::Acquire) {
                drop(link);
                tokio::time::sleep(FLUSH_EVERY).await;
                continue;
            }
            match session(&shared, &link).await {
                Ok(()) => return,
                Err(e) => {
                    if link.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "Redis is down; counting locally until it is back");
                        delay = FIRST_RETRY;
                    } else {
                        tracing::debug!(error = %e, "Redis still unreachable");
                    }
                    link.outbox.unlink(0);
                }
            }
            drop(link);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(LAST_RETRY);
        }
    });
}

/// Connects to the one Redis, or to the Cluster its several URLs seed, and runs a session.
async fn session(shared: &Weak<Shared>, link: &Link) -> redis::RedisResult<()> {
    match link.settings.urls.as_slice() {
        [url] => {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let con = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            session_on(con, shared, link).await
        }
        seeds => {
            let con = redis::cluster::ClusterClient::builder(seeds.iter().map(String::as_str))
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(1)
                .build()?
                .get_async_connection()
                .await?;
            session_on(con, shared, link).await
        }
    }
}

/// One connection's life: returns `Ok` when the counter is gone or closing.
async fn session_on(
    mut con: impl ConnectionLike,
    shared: &Weak<Shared>,
    link: &Link,
) -> redis::RedisResult<()> {
    redis::cmd("PING").query_async::<()>(&mut con).await?;
    // From here changes queue; the whole set goes first, so nothing missed is left out.
    link.outbox.link();
    send_all(&mut con, shared, link).await?;
    if !link.up.swap(true, Ordering::Relaxed) {
        let urls: Vec<String> = link.settings.urls.iter().map(|u| redacted(u)).collect();
        tracing::info!(urls = %urls.join(","), "Redis is up; the count is shared");
    }
    let mut last_read: Option<Instant> = None;
    loop {
        if shared.strong_count() == 0 {
            return Ok(());
        }
        let closing = link.closing.load(Ordering::Relaxed);
        let (items, overflowed) = link.outbox.take();
        if overflowed {
            tracing::warn!("Redis takes changes slower than they come; sending the whole set");
            send_all(&mut con, shared, link).await?;
        }
        for part in items.chunks(PIPELINE) {
            if let Err(e) = send(&mut con, &link.settings.prefix, part).await {
                link.outbox.unlink(items.len());
                return Err(e);
            }
        }
        if closing {
            return Ok(());
        }
        if last_read.is_none_or(|at| at.elapsed() >= READ_EVERY) {
            let view = read(&mut con, link).await?;
            *link.view.lock() = Some(view);
            last_read = Some(Instant::now());
        }
        tokio::time::sleep(FLUSH_EVERY).await;
    }
}

/// Sends the whole local set, walked on a blocking thread a part at a time while this one
/// sends; then nothing missed before is left out.
async fn send_all(
    con: &mut impl ConnectionLike,
    shared: &Weak<Shared>,
    link: &Link,
) -> redis::RedisResult<()> {
    let (parts, mut received) = tokio::sync::mpsc::channel::<Vec<(IpAddr, u32)>>(4);
    let walked = shared.clone();
    let walker = tokio::task::spawn_blocking(move || {
        if let Some(shared) = walked.upgrade() {
            shared.local.for_each_member(|part| {
                let _ = parts.blocking_send(part.to_vec());
            });
        }
    });
    while let Some(part) = received.recv().await {
        for part in part.chunks(PIPELINE) {
            send(con, &link.settings.prefix, part).await?;
        }
    }
    let _ = walker.await;
    link.outbox.caught_up();
    Ok(())
}

/// The shard of `ip`, by a multiplicative hash so that neighbouring addresses spread, and its
/// family's digit.
fn shard_of(ip: IpAddr) -> (u64, u8) {
    let (bits, family) = match ip {
        IpAddr::V4(a) => (u64::from(a.to_bits()), 4),
        IpAddr::V6(a) => {
            let bits = a.to_bits();
            ((bits >> 64) as u64 ^ bits as u64, 6)
        }
    };
    (
        bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32 & (SHARDS - 1),
        family,
    )
}

/// The key of a shard's family: `{prefix:shard}:family`, so a shard's keys share a slot.
fn key(prefix: &str, shard: u64, family: u8) -> String {
    format!("{{{prefix}:{shard}}}:{family}")
}

/// The member an address is kept as: its bytes.
fn member(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Sends `items`: a pipeline per shard (a Cluster takes no pipeline across slots), a `ZADD GT`
/// per key in it.
async fn send(
    con: &mut impl ConnectionLike,
    prefix: &str,
    items: &[(IpAddr, u32)],
) -> redis::RedisResult<()> {
    let mut by_shard: Vec<[Option<redis::Cmd>; 2]> = (0..SHARDS).map(|_| [None, None]).collect();
    for &(ip, time) in items {
        let (shard, family) = shard_of(ip);
        by_shard[shard as usize][usize::from(family == 6)]
            .get_or_insert_with(|| {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(key(prefix, shard, family)).arg("GT");
                cmd
            })
            .arg(time)
            .arg(member(ip));
    }
    for cmds in by_shard {
        let mut pipe = redis::pipe();
        for cmd in cmds.into_iter().flatten() {
            pipe.add_command(cmd).ignore();
        }
        if !pipe.is_empty() {
            pipe.query_async::<()>(con).await?;
        }
    }
    Ok(())
}

/// Every key's `ZCARD`, and with windows each window's `ZCOUNT`: a pipeline per shard.
async fn read(con: &mut impl ConnectionLike, link: &Link) -> redis::RedisResult<View> {
    let prefix = &link.settings.prefix;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A window holds the steps after `now`'s step minus its length, as the local ones do.
    let starts: Vec<(String, u64)> = link.windows.as_ref().map_or_else(Vec::new, |w| {
        let step = w.step_secs();
        w.windows
            .iter()
            .map(|(label, len)| {
                let steps = len.as_secs() / step;
                let start = (now / step).saturating_sub(steps).saturating_add(1) * step;
                (label.clone(), start)
            })
            .collect()
    });
    let mut view = View {
        counts: Counts::default(),
        windows: starts.iter().map(|(l, _)| (l.clone(), 0)).collect(),
    };
    for shard in 0..SHARDS {
        let mut pipe = redis::pipe();
        for family in [4, 6] {
            let key = key(prefix, shard, family);
            pipe.cmd("ZCARD").arg(&key);
            for (_, start) in &starts {
                pipe.cmd("ZCOUNT").arg(&key).arg(start).arg("+inf");
            }
        }
        let replies: Vec<u64> = pipe.query_async(con).await?;
        let (v4, v6) = replies.split_at(1 + starts.len());
        view.counts.ipv4 += v4[0];
        view.counts.ipv6 += v6[0];
        for (window, (a, b)) in view.windows.iter_mut().zip(v4[1..].iter().zip(&v6[1..])) {
            window.1 += a + b;
        }
    }
    Ok(view)
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => {
            let scheme = scheme_user.split("//").next().unwrap_or("");
            format!("{scheme}//***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_shards_and_keep_families_apart() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000u32 {
            seen.insert(shard_of(IpAddr::V4(std::net::Ipv4Addr::from_bits(i))));
        }
        assert_eq!(seen.len(), SHARDS as usize, "{seen:?}");
        let (shard, family) = shard_of("2001:db8::1".parse().unwrap());
        assert_eq!(family, 6);
        assert_eq!(key("ipc", shard, family), format!("{{ipc:{shard}}}:6"));
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
