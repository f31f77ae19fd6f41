//! The baseline for `make load-test`: the cheapest HTTP server that does the transport work the
//! service does, and nothing else.
//!
//! A plain hyper 1 HTTP/1.1 server with keep-alive on the service's own worker model: a
//! single-threaded tokio runtime per worker thread, the accepting thread one of them, connections
//! dealt round-robin (`--workers N`, default one per core; `--workers 1` serves everything on
//! the accepting thread). For every request it reads the whole body and answers 200 with the
//! fixed JSON the service sends for a new address. It parses nothing and counts nothing, so
//! `service req/s ÷ bare req/s` in `scripts/load-test.sh` is the share of the raw HTTP throughput
//! the service keeps once it parses, validates, counts and measures each entry.
//!
//! ```text
//! cargo run --release --example bare_hyper -- 127.0.0.1:15001 --workers 2
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const DEFAULT_ADDR: &str = "127.0.0.1:15001";
const BODY: &str = r#"{"status":"success","message":"New IP logged","unique_ips":1}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = DEFAULT_ADDR.parse()?;
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => workers = args.next().ok_or("--workers N")?.parse()?,
            other => addr = other.parse()?,
        }
    }
    // The other workers: a thread each, fed connections over a channel.
    let mut queues = Vec::new();
    for _ in 1..workers.max(1) {
        let (tx, mut rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                while let Some(stream) = rx.recv().await {
                    serve(stream);
                }
            })
        });
        queues.push(tx);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(accept(addr, workers, queues))
}

async fn accept(
    addr: SocketAddr,
    workers: usize,
    queues: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    println!(
        "bare_hyper listening on http://{} ({workers} workers)",
        listener.local_addr()?
    );
    for turn in 0usize.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors or a connection reset before accept: keep serving the rest.
            Err(err) => {
                eprintln!("accept: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = stream.into_std()?;
        match turn % (queues.len() + 1) {
            0 => serve(stream),
            i => {
                let _ = queues[i - 1].send(stream);
            }
        }
    }
    Ok(())
}

/// Serves one connection on the current thread's runtime.
fn serve(stream: std::net::TcpStream) {
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    tokio::spawn(async move {
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service_fn(handle));
        // Clients dropping connections mid-request is normal under load; nothing to report.
        let _ = conn.await;
    });
}

/// Reads the whole request body, then answers with the fixed success JSON.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.into_body().collect().await {
        Ok(_) => (StatusCode::OK, BODY),
        Err(_) => (StatusCode::BAD_REQUEST, r#"{"status":"error"}"#),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
