//! Batch ingest over HTTP against an in-process baseline, on the same data in the same run.
//!
//! The data: random IPv4 addresses (fixed seed) as seed-format NDJSON entries and as combined
//! access-log lines. The baseline is the least a batch path could do, on one core: split lines
//! with memchr, find `"ip":"` (NDJSON) or the first space (text), parse the address, insert it
//! into a `HashSet<u32>`. The service is the real one (`App::build`, port 0) on this process's
//! tokio runtime; `--clients` threads post pre-built bodies of `--batch` lines with ureq, plain
//! and gzip-compressed. Each round starts a fresh service so that every address is new, as it
//! is for the baseline; the figure is the median of `--rounds`.
//!
//! ```sh
//! cargo run --release --example batch_ingest -- [--lines 2000000] [--batch 10000] [--clients 2] [--rounds 3]
//! ```
//!
//! With `--against OLD,NEW` (paths of `ip-counter` binaries) it compares builds instead: each
//! round starts each binary fresh (port 0, its own data directory), in rotating order, and
//! prints each binary's lines/s and its ratio to the first binary in the same round
//! (`scripts/ab.sh` uses it to compare a change against the build before it). A binary may
//! carry settings after a `?`, `VAR=value` pairs joined by `&`, to compare settings of one
//! build (`target/release/ip-counter?WINDOWS=,target/release/ip-counter`).

use std::collections::HashSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use ip_counter::app::App;
use ip_counter::config::Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Options {
    lines: usize,
    batch: usize,
    clients: usize,
    rounds: usize,
    /// Binaries to compare instead of the in-process service and the baseline.
    against: Vec<String>,
}

fn options() -> Options {
    let mut o = Options {
        lines: 2_000_000,
        batch: 10_000,
        clients: 2,
        rounds: 3,
        against: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        if pair[0] == "--against" {
            let list = pair.get(1).expect("--against needs BIN,BIN");
            o.against = list.split(',').map(str::to_owned).collect();
            continue;
        }
        let value = pair.get(1).and_then(|v| v.parse().ok());
        let value = value.unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--lines" => o.lines = value,
            "--batch" => o.batch = value,
            "--clients" => o.clients = value,
            "--rounds" => o.rounds = value,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// The same addresses as NDJSON entries and as combined-format lines; the entries are
/// timestamped over the last day, so that with time windows on each lands in them.
fn generate(lines: usize) -> (Vec<u8>, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut ndjson = Vec::with_capacity(lines * 100);
    let mut text = Vec::with_capacity(lines * 120);
    let now = std::time::SystemTime::now();
    for i in 0..lines {
        let ip = Ipv4Addr::from(rng.random::<u32>());
        let ago = Duration::from_micros(rng.random_range(0..86_400_000_000));
        let at = humantime::format_rfc3339_micros(now - ago);
        writeln!(
            ndjson,
            r#"{{"timestamp":"{at}","ip":"{ip}","url":"/api/v1/items/{i}"}}"#
        )
        .unwrap();
        writeln!(
            text,
            r#"{ip} - - [24/Jun/2020:15:27:{:02} +0000] "GET /api/v1/items/{i} HTTP/1.1" 200 612 "-" "Mozilla/5.0""#,
            i % 60
        )
        .unwrap();
    }
    (ndjson, text)
}

/// Bodies of `batch` lines each.
fn split(data: &[u8], batch: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut start = 0;
    let mut n = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        n += 1;
        if n == batch {
            bodies.push(data[start..=end].to_vec());
            start = end + 1;
            n = 0;
        }
    }
    if start < data.len() {
        bodies.push(data[start..].to_vec());
    }
    bodies
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// The baseline: split, find, parse, insert into a `HashSet<u32>`; returns the distinct count.
fn baseline(data: &[u8], ndjson: bool) -> usize {
    let finder = memchr::memmem::Finder::new(br#""ip":""#);
    let mut set = HashSet::<u32>::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        let line = &data[start..end];
        start = end + 1;
        let field = if ndjson {
            let Some(at) = finder.find(line) else {
                continue;
            };
            let rest = &line[at + 6..];
            &rest[..memchr::memchr(b'"', rest).unwrap_or(rest.len())]
        } else {
            &line[..memchr::memchr(b' ', line).unwrap_or(line.len())]
        };
        if let Some(ip) = std::str::from_utf8(field)
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            set.insert(ip.to_bits());
        }
    }
    set.len()
}

/// A fresh service (persistence on, buffered: the default, in a data directory of its own) to
/// post to: in this process, or a binary started for it.
enum Service {
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<std::io::Result<()>>,
    },
    Process(std::process::Child),
}

impl Service {
    /// Starts one; returns it, its data directory and its `/logs` URL.
    fn start(
        runtime: &tokio::runtime::Runtime,
        binary: Option<&str>,
    ) -> (Service, tempfile::TempDir, String) {
        let data = tempfile::tempdir().unwrap();
        let Some(binary) = binary else {
            let config = Config::from_args([
                "ip-counter",
                "--log-port=0",
                "--metrics-port=0",
                "--server-host=127.0.0.1",
                &format!("--data-dir={}", data.path().display()),
            ])
            .unwrap();
            let app = runtime.block_on(App::build(config)).unwrap();
            let url = format!("http://{}/logs", app.ingest_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = runtime.spawn(app.run_until_stopped(async {
                let _ = stopped.await;
            }));
            return (Service::InProcess { stop, server }, data, url);
        };
        let (binary, settings) = binary.split_once('?').unwrap_or((binary, ""));
        let settings = settings.split('&').filter_map(|pair| pair.split_once('='));
        let mut child = std::process::Command::new(binary)
            .env_clear()
            .envs(settings)
            .envs([
                ("LOG_PORT", "0"),
                ("METRICS_PORT", "0"),
                ("SERVER_HOST", "127.0.0.1"),
            ])
            .env("LOG_LEVEL", "warn")
            .env("DATA_DIR", data.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}"));
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let addr = lines
            .find_map(|l| {
                l.ok()?
                    .strip_prefix("ingest listening on http://")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{binary} printed no ingest address"));
        let ready = format!("http://{addr}/ready");
        while ureq::get(&ready).call().is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        (Service::Process(child), data, format!("http://{addr}/logs"))
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) {
        match self {
            Service::InProcess { stop, server } => {
                let _ = stop.send(());
                runtime.block_on(server).unwrap().unwrap();
            }
            Service::Process(mut child) => {
                let pid = child.id().to_string();
                std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                child.wait().unwrap();
            }
        }
    }
}

/// Posts every body with `clients` threads against a fresh service (`binary`, or this
/// process's); returns the seconds taken and the service's final count.
fn over_http(
    runtime: &tokio::runtime::Runtime,
    binary: Option<&str>,
    bodies: &[Vec<u8>],
    content_type: &str,
    gzip: bool,
    clients: usize,
) -> (f64, u64) {
    let (service, _data, url) = Service::start(runtime, binary);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (agent, url) = (agent.clone(), url.clone());
            scope.spawn(move || {
                for body in bodies.iter().skip(client).step_by(clients) {
                    let mut request = agent.post(&url).header("content-type", content_type);
                    if gzip {
                        request = request.header("content-encoding", "gzip");
                    }
                    let mut reply = request.send(&body[..]).expect("POST /logs");
                    reply.body_mut().read_to_string().unwrap();
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut stats = agent
        .get(url.replace("/logs", "/stats"))
        .call()
        .expect("GET /stats");
    let stats: serde_json::Value =
        serde_json::from_str(&stats.body_mut().read_to_string().unwrap()).unwrap();
    service.stop(runtime);
    (seconds, stats["unique_ip_addresses"].as_u64().unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ndjson, text) = generate(o.lines);
    let ndjson_bodies = split(&ndjson, o.batch);
    let text_bodies = split(&text, o.batch);
    let ndjson_gz: Vec<Vec<u8>> = ndjson_bodies.iter().map(|b| gzip(b)).collect();
    let text_gz: Vec<Vec<u8>> = text_bodies.iter().map(|b| gzip(b)).collect();
    println!(
        "{} lines ({:.0} MB NDJSON, {:.0} MB text), {} lines a request, {} clients, {} rounds",
        o.lines,
        ndjson.len() as f64 / 1e6,
        text.len() as f64 / 1e6,
        o.batch,
        o.clients,
        o.rounds
    );

    let cases: [(&str, &[Vec<u8>], &str, bool); 4] = [
        ("HTTP NDJSON", &ndjson_bodies, "application/x-ndjson", false),
        ("HTTP NDJSON gzip", &ndjson_gz, "application/x-ndjson", true),
        ("HTTP text/plain", &text_bodies, "text/plain", false),
        ("HTTP text/plain gzip", &text_gz, "text/plain", true),
    ];
    if !o.against.is_empty() {
        return compare_binaries(&runtime, &o, &cases);
    }
    let mut base_ndjson = Vec::new();
    let mut base_text = Vec::new();
    let mut http: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut distinct = 0;
    for _ in 0..o.rounds {
        let t = Instant::now();
        distinct = baseline(&ndjson, true);
        base_ndjson.push(o.lines as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        assert_eq!(baseline(&text, false), distinct);
        base_text.push(o.lines as f64 / t.elapsed().as_secs_f64());
        for (i, &(_, bodies, content_type, gz)) in cases.iter().enumerate() {
            let (seconds, count) = over_http(&runtime, None, bodies, content_type, gz, o.clients);
            assert_eq!(count, distinct as u64, "{}", cases[i].0);
            http[i].push(o.lines as f64 / seconds);
        }
    }
    let base = median(base_ndjson);
    println!(
        "{distinct} distinct addresses; lines/s, median of {} rounds:",
        o.rounds
    );
    println!(
        "  {:<34} {:>6.2} M/s",
        "baseline NDJSON (1 core, HashSet<u32>)",
        base / 1e6
    );
    println!(
        "  {:<34} {:>6.2} M/s",
        "baseline text (1 core, HashSet<u32>)",
        median(base_text) / 1e6
    );
    for (i, (name, ..)) in cases.iter().enumerate() {
        let rate = median(http[i].clone());
        println!(
            "  {name:<34} {:>6.2} M/s   {:.2} of the NDJSON baseline",
            rate / 1e6,
            rate / base
        );
    }
}

/// `--against`: every case against every binary, in rotating order each round; lines/s and
/// the ratio to the first binary in the same round, medians of the rounds.
fn compare_binaries(
    runtime: &tokio::runtime::Runtime,
    o: &Options,
    cases: &[(&str, &[Vec<u8>], &str, bool)],
) {
    let n = o.against.len();
    for &(name, bodies, content_type, gz) in cases {
        let mut rates = vec![Vec::new(); n];
        let mut ratios = vec![Vec::new(); n];
        for round in 0..o.rounds {
            let mut rate = vec![0.0; n];
            let mut counts = Vec::new();
            for k in 0..n {
                let b = (round + k) % n;
                let (seconds, count) = over_http(
                    runtime,
                    Some(&o.against[b]),
                    bodies,
                    content_type,
                    gz,
                    o.clients,
                );
                rate[b] = o.lines as f64 / seconds;
                counts.push(count);
            }
            // A sketch (COUNT_MODE=approx) estimates: within 3 % (four of its standard errors).
            let estimating = o.against.iter().any(|a| a.contains("COUNT_MODE=approx"));
            let agree = |a: u64, b: u64| match estimating {
                false => a == b,
                true => (a as f64 - b as f64).abs() <= 0.03 * a.max(b) as f64,
            };
            assert!(
                counts.windows(2).all(|w| agree(w[0], w[1])),
                "{name}: counts differ: {counts:?}"
            );
            for b in 0..n {
                rates[b].push(rate[b]);
                ratios[b].push(rate[b] / rate[0]);
            }
        }
        for b in 0..n {
            let by_round: Vec<String> = ratios[b].iter().map(|r| format!("{r:.3}")).collect();
            println!(
                "  {name:<22} {:<40} {:>6.2} M lines/s   ratio to the first {:.3} ({})",
                o.against[b],
                median(rates[b].clone()) / 1e6,
                median(ratios[b].clone()),
                by_round.join(", ")
            );
        }
    }
}
