//! Persistence with the real binary: restarts, kill -9 under load in both durability modes,
//! torn and damaged files, a full disk (a file size limit set with prlimit) and two processes
//! on one data directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::{Finished, Reply, ServerProcess, require_tool, run_to_exit};

/// Bytes of a log record with time windows on (the default): format version 2, an address and
/// its time.
pub const RECORD: usize = 20;

pub(crate) fn data_dir_flag(dir: &Path) -> String {
    format!("--data-dir={}", dir.display())
}

/// The binary on data directory `dir`, as soon as it listens (`/ready` may still be 503).
pub(crate) fn start_listening(dir: &Path, extra: &[&str]) -> ServerProcess {
    let flag = data_dir_flag(dir);
    let mut flags = vec![flag.as_str()];
    flags.extend_from_slice(extra);
    ServerProcess::start(&flags, &[])
}

/// The binary on data directory `dir`, once it has read the directory back: until then
/// `/stats` shows the count as far as it has been read.
pub(crate) async fn start(dir: &Path, extra: &[&str]) -> ServerProcess {
    let server = start_listening(dir, extra);
    server.wait_ready().await;
    server
}

/// Runs the binary on `dir` and expects it to refuse to start.
pub(crate) fn start_refused(dir: &Path) -> Finished {
    let flag = data_dir_flag(dir);
    let args = [
        "--log-port=0",
        "--metrics-port=0",
        "--server-host=127.0.0.1",
        flag.as_str(),
    ];
    let finished = run_to_exit(&args, &[], Duration::from_secs(20));
    assert!(
        !finished.status.success(),
        "started on a damaged directory: {finished:?}"
    );
    finished
}

pub(crate) fn verify(dir: &Path) -> Finished {
    run_to_exit(
        &["verify", &dir.display().to_string()],
        &[],
        Duration::from_secs(20),
    )
}

/// The data directory's log files, oldest first.
pub(crate) fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-"))
        .collect();
    logs.sort();
    logs
}

pub(crate) fn addresses(from: u32, n: u32) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            if i % 5 == 0 {
                format!("2001:db8::{:x}:{:x}", i >> 16, i & 0xffff)
            } else {
                std::net::Ipv4Addr::from_bits(0x0a00_0000 + i).to_string()
            }
        })
        .collect()
}

/// Posts each address as a single entry, asserting 200 for each.
pub(crate) async fn post_each(server: &ServerProcess, ips: &[String]) {
    for ip in ips {
        let reply = server.post_ip(ip).await;
        assert_eq!(reply.status, 200, "{ip}: {}", reply.text);
    }
}

/// Every address of `acked` is counted (re-posting them all finds none new) and the count is
/// at least theirs and at most `sent`.
async fn assert_kept(server: &ServerProcess, acked: &HashSet<String>, sent: usize) {
    let count = server.unique_count().await;
    assert!(
        count >= acked.len() as u64 && count <= sent as u64,
        "count {count}, acknowledged {}, sent {sent}",
        acked.len()
    );
    let acked: Vec<String> = acked.iter().cloned().collect();
    for chunk in acked.chunks(5_000) {
        let reply = server.post_batch(chunk).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            reply.json()["new_ips"],
            0,
            "an acknowledged address was lost: {}",
            reply.text
        );
    }
    for ip in acked.iter().take(10) {
        let reply = server.post_ip(ip).await;
        assert_eq!(
            reply.json()["message"],
            "IP already seen",
            "{ip}: {}",
            reply.text
        );
    }
    assert_eq!(server.unique_count().await, count);
}

#[tokio::test]
async fn the_count_survives_a_restart_and_shutdown_syncs_it() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), &[]).await;
    let ips = addresses(0, 40);
    post_each(&server, &ips[..30]).await;
    assert_eq!(server.post_batch(&ips[20..]).await.json()["new_ips"], 10);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());

    let server = start(data.path(), &[]).await;
    assert_eq!(server.unique_count().await, 40);
    let reply = server.post_ip(&ips[7]).await;
    assert_eq!(reply.json()["message"], "IP already seen", "{}", reply.text);
    let text = server.metrics_text().await;
    assert!(text.contains("\nunique_ip_addresses 40\n"), "{text}");
    assert!(
        text.contains("\nipcounter_persistence_writable 1\n"),
        "{text}"
    );
    // The restart replayed a log, so it folds it into a snapshot at once.
    let snapshot_time = |text: &str| {
        crate::helpers::metric_value(
            text,
            "ipcounter_persistence_last_snapshot_timestamp_seconds",
        )
    };
    let mut text = text;
    for _ in 0..200 {
        if snapshot_time(&text) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        text = server.metrics_text().await;
    }
    assert!(snapshot_time(&text) > 1.7e9, "{text}");
}

#[tokio::test]
async fn persistence_off_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("never");
    let server = start(&dir, &["--persistence=off"]).await;
    assert_eq!(server.post_ip("1.2.3.4").await.status, 200);
    assert!(!dir.exists());
}

/// How a cycle of [`crash_cycles`] ends the service.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL, as a crash.
    Kill,
    /// SIGTERM, which must exit 0 after syncing.
    Term,
}

/// What the clients of a [`crash_cycles`] cycle send.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// 6 clients: single entries, with a 10-line NDJSON batch every 7th request.
    Mixed,
    /// 8 clients: batches of 3,000 lines (text/plain and NDJSON in turn), 100 of them repeats.
    BigBatches,
}

/// One request of `load` from client `client`: its addresses, content type and body.
fn load_request(load: Load, client: u32, i: u32, base: u32) -> (Vec<String>, &'static str, String) {
    match load {
        Load::Mixed if i % 7 == 6 => {
            let ips = addresses(base + i * 10, 10);
            let body = ips
                .iter()
                .map(|ip| format!("{{\"ip\":\"{ip}\"}}\n"))
                .collect();
            (ips, "application/x-ndjson", body)
        }
        Load::Mixed => {
            let ips = addresses(base + i * 10, 1);
            let body = format!("{{\"ip\":\"{}\"}}", ips[0]);
            (ips, "application/json", body)
        }
        Load::BigBatches => {
            let mut ips = addresses(base + i * 2_900, 2_900);
            ips.extend(addresses(base, 100));
            if (client + i).is_multiple_of(2) {
                let body = ips
                    .iter()
                    .map(|ip| format!("{ip} - - [x] \"GET / HTTP/1.1\" 200 1\n"));
                (ips.clone(), "text/plain", body.collect())
            } else {
                let body = ips.iter().map(|ip| format!("{{\"ip\":\"{ip}\"}}\n"));
                (ips.clone(), "application/x-ndjson", body.collect())
            }
        }
    }
}

/// Each cycle starts the service on the same directory, checks that everything acknowledged
/// before is still counted, then puts it under the next load of `loads` (in turn) and stops it
/// after a seeded random delay. Every third cycle snapshots every 200 ms, so that stops land
/// during snapshots and log switches too.
async fn crash_cycles(durability: &str, kills: usize, seed: u64, stop_with: Stop, loads: &[Load]) {
    let data = tempfile::tempdir().unwrap();
    let mode = format!("--durability={durability}");
    let mut rng = StdRng::seed_from_u64(seed);
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let sent = Arc::new(Mutex::new(HashSet::<String>::new()));
    let started = std::time::Instant::now();
    let mut next = 0u32;
    for cycle in 0..=kills {
        let mut flags = vec![mode.as_str()];
        if cycle % 3 == 2 {
            flags.extend(["--snapshot-interval=200ms", "--fsync-interval=50ms"]);
        }
        let mut server = start(data.path(), &flags).await;
        let known = acked.lock().unwrap().clone();
        let sent_so_far = sent.lock().unwrap().len();
        assert_kept(&server, &known, sent_so_far).await;
        if cycle == kills {
            break;
        }
        let load = loads[cycle % loads.len()];
        let clients_n = match load {
            Load::Mixed => 6,
            Load::BigBatches => 8,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client in 0..clients_n {
            let (acked, sent, stop) = (acked.clone(), sent.clone(), stop.clone());
            let url = server.ingest_url("/logs");
            let http = server.client.clone();
            let base = next + client * 1_000_000;
            clients.push(tokio::spawn(async move {
                for i in 0u32.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (ips, content_type, body) = load_request(load, client, i, base);
                    sent.lock().unwrap().extend(ips.iter().cloned());
                    let request = http
                        .post(&url)
                        .header("content-type", content_type)
                        .body(body);
                    let Ok(response) = request.send().await else {
                        break;
                    };
                    let reply = Reply::read_lossy(response).await;
                    match reply {
                        Some(reply) if reply.status == 200 => {
                            acked.lock().unwrap().extend(ips);
                        }
                        Some(reply) => panic!("unexpected reply {} {}", reply.status, reply.text),
                        None => break,
                    }
                }
            }));
        }
        next += clients_n * 1_000_000;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        match stop_with {
            Stop::Kill => server.kill_9(),
            Stop::Term => {
                server.signal("TERM");
                let status = server.wait_exit(Duration::from_secs(10));
                assert!(status.success(), "{status}: {}", server.output());
            }
        }
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
    }
    let (acked, sent) = (acked.lock().unwrap().len(), sent.lock().unwrap().len());
    assert!(acked > 100, "the load reached the service");
    eprintln!(
        "{durability}, {loads:?}: {kills} stops, {kills} restarts all succeeded, {acked} addresses \
         acknowledged of {sent} sent, none lost ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
}

const BOTH: &[Load] = &[Load::Mixed, Load::BigBatches];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_address_buffered() {
    crash_cycles("buffered", 11, 4, Stop::Kill, BOTH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_address_fsync() {
    crash_cycles("fsync", 11, 5, Stop::Kill, BOTH).await;
}

/// `make crash-test`: CRASH_KILLS (default 40) kill -9s per durability mode, big batches and
/// single entries in turn, on the release binary; CRASH_SEED picks other moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: make crash-test"]
async fn crash_test() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect(name))
    };
    let (kills, seed) = (var("CRASH_KILLS", 40) as usize, var("CRASH_SEED", 1));
    crash_cycles("buffered", kills, seed, Stop::Kill, BOTH).await;
    crash_cycles("fsync", kills, seed + 1, Stop::Kill, BOTH).await;
}

/// SIGTERM under load: the service exits 0, and everything it acknowledged, up to its last
/// reply, is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_keeps_every_acknowledged_address() {
    crash_cycles("buffered", 3, 6, Stop::Term, BOTH).await;
    crash_cycles("fsync", 3, 7, Stop::Term, BOTH).await;
}

/// Kills the service right after a batch of 5 new addresses (the log's last frame), then cuts
/// the log at every offset inside that frame: each cut keeps the 20 addresses before it.
#[tokio::test]
async fn a_torn_last_write_is_dropped_at_every_offset() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), &[]).await;
    let ips = addresses(0, 25);
    post_each(&server, &ips[..20]).await;
    assert_eq!(server.post_batch(&ips[20..]).await.json()["new_ips"], 5);
    server.kill_9();
    let [log] = &logs(data.path())[..] else {
        panic!("one log expected: {:?}", logs(data.path()))
    };
    // Header, 20 single-entry frames, the batch's frame; then the zeros allocated ahead.
    let mut bytes = std::fs::read(log).unwrap();
    let frames_end = 20 + 20 * (12 + RECORD) + 12 + 5 * RECORD;
    assert!(bytes[frames_end..].iter().all(|&b| b == 0));
    bytes.truncate(frames_end);
    let last = bytes.len() - (12 + 5 * RECORD);
    for cut in last..bytes.len() {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(copy.path().join(log.file_name().unwrap()), &bytes[..cut]).unwrap();
        let report = verify(copy.path());
        assert!(report.status.success(), "cut at {cut}: {report:?}");
        assert!(
            report
                .stdout
                .contains("unique addresses: 20 (16 IPv4, 4 IPv6)"),
            "cut at {cut}: {}",
            report.stdout
        );
        if cut > last {
            let torn = format!("torn tail of {} bytes at offset {last}", cut - last);
            assert!(
                report.stdout.contains(&torn),
                "cut at {cut}: {}",
                report.stdout
            );
        }
        if [last + 1, last + 40, bytes.len() - 1].contains(&cut) {
            // The service starts, drops the torn bytes, and what it writes next reads back.
            let mut server = start(copy.path(), &[]).await;
            assert_eq!(server.unique_count().await, 20, "cut at {cut}");
            assert_eq!(server.post_batch(&ips[20..]).await.json()["new_ips"], 5);
            server.kill_9();
            let server = start(copy.path(), &[]).await;
            assert_eq!(server.unique_count().await, 25, "cut at {cut}");
        }
    }
}

pub(crate) fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_in_the_log_or_the_snapshot_stops_the_start() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), &[]).await;
    post_each(&server, &addresses(0, 10)).await;
    server.kill_9();

    // Byte 3 of the first record of the first frame (the header is 20 bytes, a frame's 12).
    let log = logs(data.path()).remove(0);
    flip(&log, 20 + 12 + 3);
    let refused = start_refused(data.path());
    let name = log.file_name().unwrap().to_str().unwrap();
    assert!(
        refused.stderr.contains(name) && refused.stderr.contains("byte offset 20"),
        "{}",
        refused.stderr
    );
    let report = verify(data.path());
    assert_eq!(report.status.code(), Some(1), "{report:?}");
    assert!(
        report.stderr.contains("byte offset 20"),
        "{}",
        report.stderr
    );

    // Undo it; a restart folds the log into a snapshot, which is then damaged.
    flip(&log, 20 + 12 + 3);
    let mut server = start(data.path(), &[]).await;
    assert_eq!(server.unique_count().await, 10);
    let snapshot = data.path().join("snapshot.bin");
    for _ in 0..200 {
        if snapshot.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let len = std::fs::metadata(&snapshot).unwrap().len() as usize;
    flip(&snapshot, len - 5);
    let refused = start_refused(data.path());
    assert!(
        refused.stderr.contains("snapshot.bin") && refused.stderr.contains("checksum"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_exits_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let _first = start(data.path(), &[]).await;
    let second = start_refused(data.path());
    assert!(
        second
            .stderr
            .contains("in use by another ip-counter process"),
        "{}",
        second.stderr
    );
}

fn prlimit(pid: u32, fsize: &str) {
    let status = std::process::Command::new(require_tool("prlimit"))
        .args([format!("--pid={pid}"), format!("--fsize={fsize}")])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --fsize={fsize}");
}

/// With a file size limit at the log's size, new addresses are refused with 503
/// `storage_unavailable` once the space written ahead is used up, while repeats and reads go on;
/// raising the limit lets writes resume, and a restart finds every acknowledged address and
/// none of the refused ones.
#[tokio::test]
async fn a_full_disk_answers_503_and_writes_resume_when_it_recovers() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path(), &[]).await;
    let ips = addresses(0, 40_000);
    let mut acked = HashSet::new();
    post_each(&server, &ips[..10]).await;
    acked.extend(ips[..10].iter().cloned());
    let log = logs(data.path()).remove(0);
    let size = std::fs::metadata(&log).unwrap().len();
    prlimit(server.pid(), &format!("{size}:unlimited"));

    // Batches of 1,000 new addresses (16 KB of log each) until the limit bites.
    let mut refused = None;
    for batch in ips[10..].chunks(1_000) {
        let reply = server.post_batch(batch).await;
        if reply.status == 200 {
            acked.extend(batch.iter().cloned());
            continue;
        }
        reply.assert_error(503, "storage_unavailable");
        assert_eq!(reply.header("retry-after"), "1");
        refused = Some(batch.to_vec());
        break;
    }
    let refused = refused.expect("a write past the limit is refused");
    server
        .post_ip(&refused[0])
        .await
        .assert_error(503, "storage_unavailable");
    let repeat = server.post_ip(&ips[0]).await;
    assert_eq!(
        repeat.json()["message"],
        "IP already seen",
        "{}",
        repeat.text
    );
    assert_eq!(server.unique_count().await, acked.len() as u64);

    prlimit(server.pid(), "unlimited");
    let retried = server.post_batch(&refused).await;
    assert_eq!(retried.json()["new_ips"], refused.len(), "{}", retried.text);
    acked.extend(refused);
    server.kill_9();

    let server = start(data.path(), &[]).await;
    assert_kept(&server, &acked, acked.len()).await;
}

/// While a large snapshot is read back, `/ready` answers 503 and a `POST /logs` waits; then
/// `/ready` turns 200 and the post is answered against the whole count.
#[tokio::test]
async fn ready_is_503_until_the_data_directory_is_read_back() {
    use ip_counter::wal::format::SnapshotWriter;

    const N: u32 = 3_000_000;
    let data = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(data.path().join("snapshot.bin")).unwrap();
    let out = std::io::BufWriter::new(file);
    // Version 1: addresses without times, as a build without windows writes them.
    let mut snapshot = SnapshotWriter::new(out, 0, 1, [4, 16]).unwrap();
    for i in 0..N {
        snapshot.push(0, &(i * 1_000).to_be_bytes()).unwrap();
    }
    let (out, _) = snapshot.finish().unwrap();
    out.into_inner().unwrap();
    // The log a snapshot is always taken beside.
    let log = ip_counter::wal::format::log_header(0, 1);
    std::fs::write(data.path().join(format!("log-{:020}.bin", 0)), log).unwrap();

    let server = start_listening(data.path(), &[]);
    let first = server
        .client
        .get(server.ingest_url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 503, "recovery was already over");
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    let posted = server.post_ip("192.0.2.1").await;
    assert_eq!(posted.status, 200, "{}", posted.text);
    assert_eq!(posted.json()["unique_ips"], u64::from(N) + 1);
    let ready = server
        .client
        .get(server.ingest_url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

/// Repeats write nothing: the log's length (`ipcounter_persistence_log_bytes`) moves by one
/// record frame per new address and not at all for 500 repeats, single or batched.
#[tokio::test]
async fn repeat_traffic_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), &[]).await;
    let log_bytes = || async {
        let text = server.metrics_text().await;
        crate::helpers::metric_value(&text, "ipcounter_persistence_log_bytes")
    };
    let empty = log_bytes().await;
    let ips = addresses(0, 5);
    post_each(&server, &ips).await;
    let after_new = log_bytes().await;
    let frame = (12 + RECORD) as f64;
    assert_eq!(after_new - empty, 5.0 * frame);
    for _ in 0..100 {
        for ip in &ips {
            assert_eq!(
                server.post_ip(ip).await.json()["message"],
                "IP already seen"
            );
        }
    }
    let repeated: Vec<String> = ips.iter().cycle().take(500).cloned().collect();
    assert_eq!(server.post_batch(&repeated).await.json()["new_ips"], 0);
    assert_eq!(log_bytes().await, after_new);
    // A batch that repeats one new address writes it once: one frame of one record.
    let twice = vec![addresses(100, 1)[0].clone(); 50];
    assert_eq!(server.post_batch(&twice).await.json()["new_ips"], 1);
    assert_eq!(log_bytes().await, after_new + frame);
}
