//! Chooses the HyperLogLog crate for issue 13 by measurement: the Apache DataSketches HLL
//! (`datasketches`, HLL_4/6/8), `hyperloglockless` and `cardinality-estimator`, each with 2^14
//! registers (SPEC's default `HLL_PRECISION`).
//!
//! ```text
//! cargo run --release --example sketch_choice -- [--max 100000000] [--seeds 16] [--big-only NAME]
//! ```
//!
//! For each candidate it inserts N distinct random IPv4 addresses (4-byte big-endian keys) for
//! N = 1M, 10M and 100M (up to `--max`), and 10M IPv6 addresses (16-byte keys), and prints
//! markdown tables of: insert rate (M addresses/s, median of 3 runs; one run at 100M), the
//! rate of an insert that also tells whether the sketch changed (what a single-entry reply needs)
//! and how many of 10M inserts did change it, the estimate's relative error at each N, the observed standard error over `--seeds` independent
//! sets of 1M against the theoretical 1.04/sqrt(2^14) (and of the union of two overlapping 1M
//! sets, 1.5M distinct), heap bytes of the sketch (counted by the
//! global allocator, not a constant), serialized bytes, the time to merge two 1M sketches,
//! whether the hash can be seeded, whether the serialized form is a standard format, and
//! whether the result is deterministic. `--big-only NAME` runs the 100M point only for the
//! configurations whose name contains NAME (to keep a shared machine's CPU time down).
//!
//! Keys are distinct by construction: a seeded bijection of 0..N (no list of addresses is kept),
//! generated into a 64Ki-key buffer outside the timed region, so the rate is the sketch's own.
//! "keyed" rows put a SipHash-1-3 with a 128-bit per-data-directory key in front of a crate that
//! has no seed of its own, which is how ip-counter would seed it.

use std::alloc::System;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[path = "common/addresses.rs"]
mod addresses;

use addresses::Addresses;
use cap::Cap;
use cardinality_estimator::CardinalityEstimator;
use datasketches::hash::value::raw_bytes;
use datasketches::hll::{HllSketch, HllType, HllUnion};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// log2 of the register count, SPEC's default `HLL_PRECISION`.
const LG_K: u8 = 14;
/// Keys generated per untimed batch.
const BATCH: usize = 1 << 16;
/// The per-data-directory key of the benchmark (any fixed value).
const DIR_KEY: u128 = 0x5eed_0fda_7ad1_ec70_1234_5678_9abc_def0;

/// What the benchmark needs of a candidate.
trait Candidate: Sized {
    /// Row name.
    const NAME: &'static str;
    /// How the hash is seeded, for the table.
    const SEED: &'static str;
    /// The serialized form, for the table.
    const FORMAT: &'static str;
    /// A new, empty sketch whose hash is keyed by `key` where the candidate can be keyed.
    fn new(key: u128) -> Self;
    /// Adds one address (4 or 16 bytes, network order).
    fn insert(&mut self, key: &[u8]);
    /// The cardinality estimate.
    fn estimate(&self) -> f64;
    /// Adds one address and tells whether the sketch changed (SPEC: a single-entry reply says
    /// "New IP logged" only then). None of the crates returns it from its insert; the estimate
    /// changes exactly when a register (or, below the dense mode, the coupon list) grows.
    fn insert_changed(&mut self, key: &[u8]) -> bool {
        let before = self.estimate();
        self.insert(key);
        self.estimate() != before
    }
    /// The union of two sketches, as a new sketch.
    fn merged(&self, other: &Self) -> Self;
    /// The serialized bytes.
    fn serialize(&self) -> Vec<u8>;
    /// Deserializes and returns the estimate (checks the round trip).
    fn round_trip(bytes: &[u8]) -> f64;
    /// The sketch's content, to compare two builds: the serialized bytes unless they hold more.
    fn state(&self) -> Vec<u8> {
        self.serialize()
    }
}

// ---------------------------------------------------------------- datasketches

/// The register storage as a type parameter.
trait DsType {
    const TYPE: HllType;
    const NAME: &'static str;
    const KEYED_NAME: &'static str;
}
struct T4;
struct T6;
struct T8;
impl DsType for T4 {
    const TYPE: HllType = HllType::Hll4;
    const NAME: &'static str = "datasketches HLL_4";
    const KEYED_NAME: &'static str = "datasketches HLL_4 keyed";
}
impl DsType for T6 {
    const TYPE: HllType = HllType::Hll6;
    const NAME: &'static str = "datasketches HLL_6";
    const KEYED_NAME: &'static str = "datasketches HLL_6 keyed";
}
impl DsType for T8 {
    const TYPE: HllType = HllType::Hll8;
    const NAME: &'static str = "datasketches HLL_8";
    const KEYED_NAME: &'static str = "datasketches HLL_8 keyed";
}

/// DataSketches HLL, updated with the address's raw bytes (as Java's and C++'s `update(byte[])`).
struct Ds<T: DsType>(HllSketch, std::marker::PhantomData<T>);

impl<T: DsType> Candidate for Ds<T> {
    const NAME: &'static str = T::NAME;
    const SEED: &'static str = "no (MurmurHash3 seed 9001 fixed)";
    const FORMAT: &'static str = "DataSketches HLL (Java/C++/Druid/Pinot/Spark)";
    fn new(_key: u128) -> Self {
        Ds(
            HllSketch::new(LG_K, T::TYPE).expect("lg_k"),
            Default::default(),
        )
    }
    fn insert(&mut self, key: &[u8]) {
        self.0.update(raw_bytes::from_slice(key));
    }
    fn estimate(&self) -> f64 {
        self.0.estimate()
    }
    fn merged(&self, other: &Self) -> Self {
        let mut union = HllUnion::new(LG_K).expect("lg_k");
        union.update(&self.0);
        union.update(&other.0);
        Ds(union.to_sketch(T::TYPE), Default::default())
    }
    fn serialize(&self) -> Vec<u8> {
        self.0.serialize()
    }
    fn round_trip(bytes: &[u8]) -> f64 {
        HllSketch::deserialize(bytes)
            .expect("deserialize")
            .estimate()
    }
}

/// DataSketches HLL fed a keyed SipHash-1-3 of the address (8 bytes) instead of the address.
struct DsKeyed<T: DsType>(Ds<T>, hyperloglockless::DefaultHasher);

impl<T: DsType> Candidate for DsKeyed<T> {
    const NAME: &'static str = T::KEYED_NAME;
    const SEED: &'static str = "yes, by a keyed pre-hash (SipHash-1-3, 128-bit key)";
    const FORMAT: &'static str = "DataSketches HLL (Java/C++/Druid/Pinot/Spark)";
    fn new(key: u128) -> Self {
        DsKeyed(
            Ds::new(key),
            hyperloglockless::DefaultHasher::seeded(&key.to_be_bytes()),
        )
    }
    fn insert(&mut self, key: &[u8]) {
        let h = self.1.hash_one(key).to_le_bytes();
        self.0.0.update(raw_bytes::from_slice(&h));
    }
    fn estimate(&self) -> f64 {
        self.0.estimate()
    }
    fn merged(&self, other: &Self) -> Self {
        DsKeyed(self.0.merged(&other.0), self.1.clone())
    }
    fn serialize(&self) -> Vec<u8> {
        self.0.serialize()
    }
    fn round_trip(bytes: &[u8]) -> f64 {
        Ds::<T>::round_trip(bytes)
    }
}

// ------------------------------------------------------------ hyperloglockless

/// hyperloglockless's dense `HyperLogLog` (1 byte a register), seeded SipHash-1-3.
struct Hlll(hyperloglockless::HyperLogLog);

impl Candidate for Hlll {
    const NAME: &'static str = "hyperloglockless HyperLogLog";
    const SEED: &'static str = "yes: `seeded(p, u128)` (SipHash-1-3 key)";
    const FORMAT: &'static str = "none: serde of the struct, or own bytes from `parts()`";
    fn new(key: u128) -> Self {
        Hlll(hyperloglockless::HyperLogLog::seeded(LG_K, key))
    }
    fn insert(&mut self, key: &[u8]) {
        self.0.insert(key);
    }
    fn estimate(&self) -> f64 {
        self.0.raw_count()
    }
    /// The harmonic sum of the registers drops exactly when a register grows.
    fn insert_changed(&mut self, key: &[u8]) -> bool {
        let before = self.0.parts().3;
        self.0.insert(key);
        self.0.parts().3 != before
    }
    fn merged(&self, other: &Self) -> Self {
        let mut m = self.0.clone();
        m.union(&other.0).expect("same precision");
        Hlll(m)
    }
    /// Registers, then zeros (u64 LE) and sum (f64 LE), from `parts()`: the smallest own format.
    fn serialize(&self) -> Vec<u8> {
        let (registers, _hasher, zeros, sum) = self.0.parts();
        let mut out = Vec::with_capacity(registers.len() + 16);
        out.extend_from_slice(registers);
        out.extend_from_slice(&(zeros as u64).to_le_bytes());
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }
    fn round_trip(bytes: &[u8]) -> f64 {
        let (registers, tail) = bytes.split_at(bytes.len() - 16);
        let zeros = u64::from_le_bytes(tail[..8].try_into().expect("8")) as usize;
        let sum = f64::from_le_bytes(tail[8..].try_into().expect("8"));
        let hasher = hyperloglockless::DefaultHasher::seeded(&DIR_KEY.to_be_bytes());
        hyperloglockless::HyperLogLog::from_parts(registers.into(), hasher, zeros, sum).raw_count()
    }
}

// --------------------------------------------------------- cardinality-estimator

/// Cloudflare's `CardinalityEstimator` at P = 14, W = 6 (6-bit registers), its default WyHash.
struct Ce(CardinalityEstimator<[u8], CeWyHash, 14, 6>);

/// The crate's default hasher (WyHash, which it does not re-export), read off its default type.
type CeWyHash = <CardinalityEstimator<[u8]> as HasherOf>::H;

/// Names the hasher type parameter of a `CardinalityEstimator`.
trait HasherOf {
    type H;
}
impl<H: std::hash::Hasher + Default, const P: usize, const W: usize> HasherOf
    for CardinalityEstimator<[u8], H, P, W>
{
    type H = H;
}

impl Candidate for Ce {
    const NAME: &'static str = "cardinality-estimator P14 W6";
    const SEED: &'static str = "no (WyHash via `Default`, seed 0)";
    const FORMAT: &'static str = "none: serde of an internal (data, Vec<u32>) tuple";
    fn new(_key: u128) -> Self {
        Ce(CardinalityEstimator::new())
    }
    fn insert(&mut self, key: &[u8]) {
        self.0.insert(key);
    }
    fn estimate(&self) -> f64 {
        self.0.estimate() as f64
    }
    fn merged(&self, other: &Self) -> Self {
        let mut m = self.0.clone();
        m.merge(&other.0);
        Ce(m)
    }
    fn serialize(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("serialize")
    }
    fn round_trip(bytes: &[u8]) -> f64 {
        let e: CardinalityEstimator<[u8], CeWyHash, 14, 6> =
            serde_json::from_slice(bytes).expect("deserialize");
        e.estimate() as f64
    }
    /// The serialized tuple's first element is the tagged heap pointer of the registers, which
    /// differs from build to build; the registers are the second.
    fn state(&self) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_slice(&self.serialize()).expect("json");
        v[1].to_string().into_bytes()
    }
}

/// cardinality-estimator fed a keyed SipHash-1-3 through `insert_hash`.
struct CeKeyed(Ce, hyperloglockless::DefaultHasher);

impl Candidate for CeKeyed {
    const NAME: &'static str = "cardinality-estimator keyed";
    const SEED: &'static str = "yes, by `insert_hash` of a keyed SipHash-1-3";
    const FORMAT: &'static str = Ce::FORMAT;
    fn new(key: u128) -> Self {
        CeKeyed(
            Ce::new(key),
            hyperloglockless::DefaultHasher::seeded(&key.to_be_bytes()),
        )
    }
    fn insert(&mut self, key: &[u8]) {
        self.0.0.insert_hash(self.1.hash_one(key));
    }
    fn estimate(&self) -> f64 {
        self.0.estimate()
    }
    fn merged(&self, other: &Self) -> Self {
        CeKeyed(self.0.merged(&other.0), self.1.clone())
    }
    fn serialize(&self) -> Vec<u8> {
        self.0.serialize()
    }
    fn round_trip(bytes: &[u8]) -> f64 {
        Ce::round_trip(bytes)
    }
    fn state(&self) -> Vec<u8> {
        self.0.state()
    }
}

// ------------------------------------------------------------------- addresses

impl Addresses {
    fn width(self) -> usize {
        if self.v6 { 16 } else { 4 }
    }
    /// Writes the addresses of indexes `from..from + out.len() / width` into `out`.
    fn fill(self, from: u64, out: &mut [u8]) {
        for (k, slot) in out.chunks_exact_mut(self.width()).enumerate() {
            match self.get(from + k as u64) {
                IpAddr::V4(a) => slot.copy_from_slice(&a.octets()),
                IpAddr::V6(a) => slot.copy_from_slice(&a.octets()),
            }
        }
    }
}

/// One build: the sketch, the time spent inserting, and its heap bytes.
struct Build<S> {
    sketch: S,
    insert_time: Duration,
    heap: usize,
}

/// Inserts addresses `from..from + n` into a new sketch, timing only the inserts.
fn build<S: Candidate>(addrs: Addresses, from: u64, n: u64, buf: &mut [u8]) -> Build<S> {
    build_with(addrs, from, n, buf, false).0
}

/// [`build`], inserting through `insert_changed` when `check` is set; also returns how many
/// inserts changed the sketch.
fn build_with<S: Candidate>(
    addrs: Addresses,
    from: u64,
    n: u64,
    buf: &mut [u8],
    check: bool,
) -> (Build<S>, u64) {
    let w = addrs.width();
    let heap_before = ALLOC.allocated();
    let mut sketch = S::new(DIR_KEY);
    let mut insert_time = Duration::ZERO;
    let mut done = 0u64;
    let mut changed = 0u64;
    while done < n {
        let take = ((n - done) as usize).min(buf.len() / w);
        let chunk = &mut buf[..take * w];
        addrs.fill(from + done, chunk);
        let start = Instant::now();
        if check {
            for key in chunk.chunks_exact(w) {
                changed += u64::from(sketch.insert_changed(black_box(key)));
            }
        } else {
            for key in chunk.chunks_exact(w) {
                sketch.insert(black_box(key));
            }
        }
        insert_time += start.elapsed();
        done += take as u64;
    }
    let heap = ALLOC.allocated().saturating_sub(heap_before);
    let b = Build {
        sketch,
        insert_time,
        heap,
    };
    (b, changed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One row of the per-N table.
struct PointRow {
    name: &'static str,
    family: &'static str,
    n: u64,
    runs: usize,
    rate: f64,
    rel_err: Vec<f64>,
    heap: usize,
    serialized: usize,
}

/// One row of the per-candidate table.
struct CandRow {
    name: &'static str,
    seeds: usize,
    changed_rate: f64,
    changed: u64,
    changed_n: u64,
    se: f64,
    bias: f64,
    within3: usize,
    merge_us: f64,
    merge_se: f64,
    serialized: usize,
    round_trip: bool,
    deterministic: bool,
    seed: &'static str,
    format: &'static str,
}

struct Options {
    max: u64,
    seeds: usize,
    big_only: Option<String>,
}

fn point<S: Candidate>(v6: bool, seed: u64, n: u64, runs: usize, buf: &mut [u8]) -> PointRow {
    let mut rates = Vec::new();
    let mut errs = Vec::new();
    let (mut heap, mut serialized) = (0, 0);
    for run in 0..runs {
        let addrs = Addresses::new(v6, seed ^ ((run as u64 + 1) * 0x9e37_79b9));
        let b = build::<S>(addrs, 0, n, buf);
        rates.push(n as f64 / b.insert_time.as_secs_f64() / 1e6);
        errs.push(b.sketch.estimate() / n as f64 - 1.0);
        heap = b.heap;
        serialized = b.sketch.serialize().len();
    }
    PointRow {
        name: S::NAME,
        family: if v6 { "IPv6" } else { "IPv4" },
        n,
        runs,
        rate: median(rates),
        rel_err: errs,
        heap,
        serialized,
    }
}

fn candidate<S: Candidate>(opts: &Options, points: &mut Vec<PointRow>) -> CandRow {
    eprintln!("{} ...", S::NAME);
    let mut buf = vec![0u8; BATCH * 16];
    let started = Instant::now();
    for n in [1_000_000u64, 10_000_000, 100_000_000] {
        if n > opts.max {
            continue;
        }
        let big = n >= 100_000_000;
        if big
            && opts
                .big_only
                .as_ref()
                .is_some_and(|k| !S::NAME.contains(k.as_str()))
        {
            continue;
        }
        let runs = if big { 1 } else { 3 };
        points.push(point::<S>(false, 1, n, runs, &mut buf));
    }
    let n6 = 10_000_000.min(opts.max);
    points.push(point::<S>(true, 2, n6, 3, &mut buf));

    // Insert with the "did it change?" answer a single-entry reply needs, IPv4 at 10M.
    let mut rates = Vec::new();
    let mut changed = 0;
    for run in 0..3 {
        let (b, c) = build_with::<S>(Addresses::new(false, 3 + run), 0, n6, &mut buf, true);
        rates.push(n6 as f64 / b.insert_time.as_secs_f64() / 1e6);
        changed = c;
    }
    let changed_rate = median(rates);

    // Observed standard error over independent sets of 1M.
    let n = 1_000_000.min(opts.max);
    let errs: Vec<f64> = (0..opts.seeds)
        .map(|s| {
            let b = build::<S>(Addresses::new(false, 1000 + s as u64), 0, n, &mut buf);
            b.sketch.estimate() / n as f64 - 1.0
        })
        .collect();
    let se = (errs.iter().map(|e| e * e).sum::<f64>() / errs.len() as f64).sqrt();
    let bias = errs.iter().sum::<f64>() / errs.len() as f64;
    let theory = 1.04 / f64::from(1u32 << LG_K).sqrt();
    let within3 = errs.iter().filter(|e| e.abs() <= 3.0 * theory).count();

    // Merge: A = 0..n, B = n/2..3n/2 of one address set; the union holds 3n/2. The merged
    // estimate's error over the same number of seeds; the time on the first pair.
    let mut merged_errs = Vec::new();
    let mut first = None;
    for s in 0..opts.seeds {
        let addrs = Addresses::new(false, 5000 + s as u64);
        let a = build::<S>(addrs, 0, n, &mut buf).sketch;
        let b = build::<S>(addrs, n / 2, n, &mut buf).sketch;
        merged_errs.push(a.merged(&b).estimate() / (n + n / 2) as f64 - 1.0);
        if first.is_none() {
            first = Some((addrs, a, b));
        }
    }
    let (addrs, a, b) = first.expect("at least one seed");
    let mut per_merge = Vec::new();
    for _ in 0..3 {
        let reps = 200;
        let start = Instant::now();
        for _ in 0..reps {
            let m = a.merged(black_box(&b));
            black_box(m.estimate());
        }
        per_merge.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(reps));
    }
    let merge_se =
        (merged_errs.iter().map(|e| e * e).sum::<f64>() / merged_errs.len() as f64).sqrt();

    // Serialization round trip and determinism (two builds of the same input, same key).
    let bytes = a.serialize();
    let round_trip = S::round_trip(&bytes) == a.estimate();
    let again = build::<S>(addrs, 0, n, &mut buf).sketch;
    let deterministic = again.state() == a.state() && again.estimate() == a.estimate();
    eprintln!("  {:.1} s", started.elapsed().as_secs_f64());

    CandRow {
        name: S::NAME,
        seeds: opts.seeds,
        changed_rate,
        changed,
        changed_n: n6,
        se,
        bias,
        within3,
        merge_us: median(per_merge),
        merge_se,
        serialized: bytes.len(),
        round_trip,
        deterministic,
        seed: S::SEED,
        format: S::FORMAT,
    }
}

fn parse_options() -> Result<Options, String> {
    let mut opts = Options {
        max: 100_000_000,
        seeds: 16,
        big_only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--max" => {
                let v = value()?;
                opts.max = v
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--max {v}: {e}"))?;
            }
            "--seeds" => {
                let v = value()?;
                opts.seeds = v.parse().map_err(|e| format!("--seeds {v}: {e}"))?;
            }
            "--big-only" => opts.big_only = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if opts.max < 1000 || opts.seeds == 0 {
        return Err("--max must be at least 1000 and --seeds at least 1".into());
    }
    Ok(opts)
}

fn millions(n: u64) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else {
        n.to_string()
    }
}

fn pct(e: f64) -> String {
    format!("{:+.3} %", e * 100.0)
}

fn main() -> std::process::ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("usage: sketch_choice [--max N] [--seeds S] [--big-only NAME]: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut points = Vec::new();
    let cands = vec![
        candidate::<Ds<T4>>(&opts, &mut points),
        candidate::<Ds<T6>>(&opts, &mut points),
        candidate::<Ds<T8>>(&opts, &mut points),
        candidate::<DsKeyed<T8>>(&opts, &mut points),
        candidate::<Hlll>(&opts, &mut points),
        candidate::<Ce>(&opts, &mut points),
        candidate::<CeKeyed>(&opts, &mut points),
    ];
    let theory = 1.04 / f64::from(1u32 << LG_K).sqrt();

    println!(
        "lg_k = {LG_K}: theoretical relative standard error 1.04/sqrt(2^14) = {:.3} % \
         (DataSketches' HIP estimator, used until a sketch goes through a union: \
         0.836/sqrt(2^14) = {:.3} %)\n",
        theory * 100.0,
        0.836 / f64::from(1u32 << LG_K).sqrt() * 100.0
    );
    println!(
        "| candidate | keys | N | insert M/s (runs) | relative error (each run) | heap bytes | serialized bytes |"
    );
    println!("| --- | --- | ---: | ---: | --- | ---: | ---: |");
    for p in &points {
        let errs: Vec<String> = p.rel_err.iter().map(|e| pct(*e)).collect();
        println!(
            "| {} | {} | {} | {:.1} ({}) | {} | {} | {} |",
            p.name,
            p.family,
            millions(p.n),
            p.rate,
            p.runs,
            errs.join(", "),
            p.heap,
            p.serialized
        );
    }
    println!();
    println!(
        "| candidate | insert+changed? M/s | changed / inserts | std error over {} × 1M (theory {:.3} %) | mean error | within 3 SE | merge of two 1M sketches | merged std error | serialized at 1M | round trip | deterministic | hash seed | format |",
        opts.seeds,
        theory * 100.0
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"
    );
    for c in &cands {
        println!(
            "| {} | {:.1} | {} / {} | {:.3} % ({:.2}× theory) | {} | {}/{} | {:.1} µs | {:.3} % | {} | {} | {} | {} | {} |",
            c.name,
            c.changed_rate,
            c.changed,
            millions(c.changed_n),
            c.se * 100.0,
            c.se / theory,
            pct(c.bias),
            c.within3,
            c.seeds,
            c.merge_us,
            c.merge_se * 100.0,
            c.serialized,
            if c.round_trip { "exact" } else { "differs" },
            if c.deterministic { "yes" } else { "no" },
            c.seed,
            c.format
        );
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    std::process::ExitCode::SUCCESS
}
