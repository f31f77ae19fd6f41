//! The log's behaviour over time: snapshots during writes, threads, group commit, a failed
//! sync and its repair; with the toy state of `testing.rs`.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testing::Toy;
use super::{Durability, Settings, StorageError, Wal, recover};

fn settings(dir: &Path, durability: Durability) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        durability,
        fsync_interval: Duration::from_millis(50),
        snapshot_interval: Duration::from_secs(3600),
    }
}

/// Record `i`: every fourth one large (snapshot section 1), the others small (section 0).
fn rec(i: u32) -> u128 {
    if i.is_multiple_of(4) {
        0x2001_0db8 << 96 | u128::from(i)
    } else {
        u128::from(i.wrapping_mul(2_654_435_761))
    }
}

fn start(dir: &Path, settings: Settings, generation: u64) -> (Arc<Toy>, Arc<Wal<Toy>>) {
    let toy = Arc::new(Toy::default());
    let wal = Wal::start(dir, settings, toy.clone(), generation, false).unwrap();
    (toy, wal)
}

/// Two threads count addresses (one by one, and in batches) while snapshots are taken:
/// reading the directory back finds every address, and only segments after the last
/// snapshot are left.
#[test]
fn snapshots_taken_during_inserts_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (toy, wal) = start(dir.path(), settings(dir.path(), Durability::Buffered), 0);
    const N: u32 = 40_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N / 2 {
                toy.insert(&wal, &[rec(i)]).unwrap();
            }
        });
        s.spawn(|| {
            let all: Vec<u128> = (N / 4..N).map(rec).collect();
            for chunk in all.chunks(1_000) {
                toy.insert(&wal, chunk).unwrap();
            }
        });
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(5));
            wal.snapshot().unwrap();
        }
    });
    wal.close().unwrap();
    assert_eq!(toy.all().len(), N as usize);

    let read = Toy::default();
    let recovered = recover::read_dir(dir.path(), &read).unwrap();
    let snapshot = recovered.snapshot.expect("a snapshot");
    assert_eq!(recovered.logs.len(), 1, "{:?}", recovered.logs);
    assert_eq!(recovered.logs[0].generation, snapshot.generation);
    assert_eq!(read.all(), toy.all());
}

/// A wal dropped without `close` (a service dropped mid-run) is not kept alive by its
/// own threads.
#[test]
fn a_dropped_wal_is_not_kept_alive_by_its_threads() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), Durability::Fsync);
    let (toy, wal) = start(dir.path(), settings, 0);
    toy.insert(&wal, &[rec(1)]).unwrap();
    let weak = Arc::downgrade(&wal);
    drop(wal);
    let deadline = Instant::now() + Duration::from_secs(5);
    while weak.upgrade().is_some() {
        assert!(Instant::now() < deadline, "a thread still holds the wal");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A snapshot while the log is empty keeps that log instead of starting another.
#[test]
fn a_snapshot_of_an_empty_log_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (toy, wal) = start(dir.path(), settings(dir.path(), Durability::Buffered), 4);
    for _ in 0..3 {
        wal.snapshot().unwrap();
    }
    toy.insert(&wal, &[rec(1)]).unwrap();
    wal.snapshot().unwrap();
    wal.close().unwrap();
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"log-00000000000000000005.bin".to_string()),
        "{names:?}"
    );
}

/// After a failed sync (simulated: the disk cannot be made to fail here) new addresses are
/// refused and waiting requests get an error, repeats still count; the snapshot thread's
/// repair makes everything durable and writes resume.
#[tokio::test]
async fn a_failed_sync_refuses_writes_until_a_snapshot_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), Durability::Fsync);
    settings.fsync_interval = Duration::from_secs(3600);
    let (toy, wal) = start(dir.path(), settings, 0);
    let insert = |i| toy.insert(&wal, &[rec(i)]);
    assert_eq!(insert(1).unwrap(), 1);
    wal.durable().await.unwrap();
    // Written, not yet synced, when the sync fails.
    assert_eq!(insert(2).unwrap(), 1);
    wal.sync_failed(&io::Error::other("simulated EIO"));
    assert!(matches!(wal.durable().await, Err(StorageError::Broken)));
    assert!(matches!(insert(3), Err(StorageError::Broken)));
    assert_eq!(insert(1).unwrap(), 0, "a repeat is still answered");
    assert_eq!(toy.all().len(), 2);

    // The snapshot thread was woken by the failure and repairs within its retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.synced.borrow().refusing.is_some() {
        assert!(Instant::now() < deadline, "not repaired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wal.durable().await.unwrap();
    assert_eq!(insert(3).unwrap(), 1);
    wal.durable().await.unwrap();
    wal.close().unwrap();

    let read = Toy::default();
    recover::read_dir(dir.path(), &read).unwrap();
    assert!([1, 2, 3].iter().all(|&i| read.contains(rec(i))));
}

/// In fsync mode `durable` returns once a sync covers everything written before the call.
#[tokio::test]
async fn fsync_mode_waits_for_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (toy, wal) = start(dir.path(), settings(dir.path(), Durability::Fsync), 0);
    assert!(wal.must_wait());
    wal.durable().await.unwrap();
    for i in 0..100 {
        assert_eq!(toy.insert(&wal, &[rec(i)]).unwrap(), 1);
        wal.durable().await.unwrap();
        assert!(wal.synced.borrow().writes > u64::from(i));
    }
    assert_eq!(toy.insert(&wal, &[rec(5)]).unwrap(), 0);
    wal.close().unwrap();
}
