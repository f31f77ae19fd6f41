//! Hostile input at the ingest listener, in process, through `ingest::handle` (the path every
//! production request takes): random bytes and mutations of valid bodies of every type, plain and
//! gzip. Every reply is a 2xx or 4xx JSON reply, and the count moves by exactly what the reply
//! says was new, only on success.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::BodyExt;
use ip_counter::config::Config;
use ip_counter::counter::Counter;
use ip_counter::http::ingest::{handle, router};
use ip_counter::http::state::AppState;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;

const CONTENT_TYPES: [&str; 7] = [
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "",
];

/// A body of one of the shapes the service takes, with valid and invalid addresses.
fn valid_body() -> impl Strategy<Value = Vec<u8>> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<u128>().prop_map(|b| std::net::Ipv6Addr::from(b).to_string()),
        Just("not-an-ip".to_owned()),
    ];
    let ips = prop::collection::vec(ip, 1..8);
    (ips, 0..4u8).prop_map(|(ips, shape)| {
        let entry = |ip: &String| {
            format!(r#"{{"timestamp":"2024-01-01T00:00:00Z","ip":"{ip}","url":"/"}}"#)
        };
        match shape {
            0 => entry(&ips[0]),
            1 => ips.iter().map(entry).collect::<Vec<_>>().join("\n"),
            2 => format!("[{}]", ips.iter().map(entry).collect::<Vec<_>>().join(",")),
            _ => ips
                .iter()
                .map(|ip| format!("{ip} - - [01/Jan/2024:00:00:00 +0000] \"GET / HTTP/1.1\" 200 1"))
                .collect::<Vec<_>>()
                .join("\n"),
        }
        .into_bytes()
    })
}

/// A valid body with a few bytes inserted, deleted or replaced, or plain random bytes.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..4);
    prop_oneof![
        (valid_body(), edits).prop_map(|(mut body, edits)| {
            for (at, byte, how) in edits {
                let at = at.index(body.len() + 1);
                match how {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    _ if at < body.len() => body[at] = byte,
                    _ => {}
                }
            }
            body
        }),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn any_body_gets_a_json_2xx_or_4xx_and_the_count_moves_only_by_what_was_new() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config =
        Config::from_args(["ip-counter", "--max-body-bytes=4KiB", "--persistence=off"]).unwrap();
    let state = Arc::new(AppState::new(Arc::new(Counter::in_memory()), &config.http));
    let router = router(state.clone());
    let client = std::net::Ipv4Addr::LOCALHOST.into();
    let cases = (
        hostile_body(),
        prop::sample::select(&CONTENT_TYPES[..]),
        any::<bool>(),
        // A truncated gzip stream, sometimes.
        any::<bool>(),
    );
    let mut runner = TestRunner::new(ProptestConfig::with_cases(1000));
    runner
        .run(&cases, |(body, content_type, gzipped, truncated)| {
            let body = if gzipped {
                let mut packed = gzip(&body);
                if truncated {
                    packed.truncate(packed.len() / 2);
                }
                packed
            } else {
                body
            };
            let mut request = Request::post("/logs");
            if !content_type.is_empty() {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            if gzipped {
                request = request.header(header::CONTENT_ENCODING, "gzip");
            }
            let request = request.body(Body::from(body)).unwrap();
            let before = state.counter.counts().total();
            let (status, reply) = runtime.block_on(async {
                let response = handle(state.clone(), router.clone(), client, request).await;
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (status, bytes)
            });
            let after = state.counter.counts().total();
            let reply: Value = serde_json::from_slice(&reply)
                .map_err(|e| TestCaseError::fail(format!("{status}: not JSON ({e})")))?;
            prop_assert!(
                status.is_success() || status.is_client_error(),
                "{status} {reply}"
            );
            let new = match (status.is_success(), &reply["new_ips"], &reply["message"]) {
                (false, _, _) => {
                    prop_assert_eq!(&reply["status"], "error");
                    0
                }
                (true, Value::Number(n), _) => n.as_u64().unwrap(),
                (true, _, message) if message == "New IP logged" => 1,
                (true, _, message) => {
                    prop_assert_eq!(message, "IP already seen", "{}", reply);
                    0
                }
            };
            prop_assert_eq!(after - before, new, "{} {}", status, reply);
            if status.is_success() {
                prop_assert_eq!(reply["unique_ips"].as_u64(), Some(after));
            }
            Ok(())
        })
        .unwrap();
}
