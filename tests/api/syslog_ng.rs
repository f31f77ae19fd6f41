//! The shipped `deploy/syslog-ng/ip-counter.conf` in a real syslog-ng (Debian's
//! syslog-ng-core and syslog-ng-mod-http), tailing an access log into the real binary: 50,000
//! distinct addresses counted exactly within 30 s, with ip-counter stopped in the middle while
//! lines keep being written, and started again on the same data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{ServerProcess, free_port, require_tool};

const TOTAL: u32 = 50_000;

/// A private syslog-ng in the foreground, killed on drop; all its files in `dir`.
struct SyslogNg {
    child: Child,
}

impl SyslogNg {
    fn start(dir: &Path, log: &Path, url: &str) -> SyslogNg {
        let binary = require_tool("syslog-ng");
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/syslog-ng/ip-counter.conf");
        let shipped = std::fs::read_to_string(shipped).unwrap();
        let set = |text: String, name: &str, value: &str| {
            let define = |v: &str| format!("@define {name} \"{v}\"");
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("@define {name} ")))
                .unwrap_or_else(|| panic!("the shipped config defines {name}"))
                .to_owned();
            text.replace(&line, &define(value))
        };
        let config = set(shipped, "ip_counter_log", log.to_str().unwrap());
        let config = set(config, "ip_counter_url", url);
        let config = set(config, "ip_counter_buffer_dir", dir.to_str().unwrap());
        std::fs::write(dir.join("ip-counter.conf"), config).unwrap();
        let main = format!(
            "@version: 3.38\n@include \"{}\"\n",
            dir.join("ip-counter.conf").display()
        );
        std::fs::write(dir.join("syslog-ng.conf"), main).unwrap();
        let child = Command::new(binary)
            .arg("-F")
            .arg("-f")
            .arg(dir.join("syslog-ng.conf"))
            .arg("-R")
            .arg(dir.join("persist"))
            .arg("-p")
            .arg(dir.join("pid"))
            .arg("-c")
            .arg(dir.join("ctl"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("starting syslog-ng");
        SyslogNg { child }
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append_lines(log: &Path, range: std::ops::Range<u32>) {
    let mut f = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut text = String::new();
    for i in range {
        let [_, b, c, d] = i.to_be_bytes();
        text.push_str(&format!(
            "10.{b}.{c}.{d} - - [03/Dec/2026:10:00:00 +0000] \"GET /p?q=\\\"x\\\" HTTP/1.1\" 200 5 \"-\" \"agent\"\n"
        ));
    }
    f.write_all(text.as_bytes()).unwrap();
}

fn server(port: u16, data: &Path) -> ServerProcess {
    ServerProcess::start_exact(
        &[
            &format!("--log-port={port}"),
            "--metrics-port=0",
            "--server-host=127.0.0.1",
            &format!("--data-dir={}", data.display()),
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_syslog_ng_config_loses_nothing_across_an_ip_counter_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("access.log");
    let port = free_port();
    let mut service = server(port, &data);
    service.wait_ready().await;
    let started = Instant::now();
    append_lines(&log, 0..TOTAL / 2);
    let syslog_ng = SyslogNg::start(dir.path(), &log, &format!("http://127.0.0.1:{port}/logs"));
    let stderr = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();

    // Some of the first half arrives; then ip-counter stops while the log keeps growing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while service.unique_count().await < 5_000 {
        assert!(
            Instant::now() < deadline,
            "syslog-ng sent nothing: {}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_stop = service.unique_count().await;
    eprintln!("ip-counter stopped with {at_stop} of {TOTAL} counted");
    service.signal("TERM");
    service.wait_exit(Duration::from_secs(10));
    append_lines(&log, TOTAL / 2..TOTAL);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let service = server(port, &data);
    service.wait_ready().await;
    let deadline = started + Duration::from_secs(30);
    loop {
        let count = service.unique_count().await;
        if count == u64::from(TOTAL) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{count} of {TOTAL} counted within 30 s; syslog-ng: {}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(syslog_ng);
}
