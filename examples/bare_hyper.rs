//! The baseline for `make load-test`: the cheapest HTTP server that does the transport work the
//! service does, and nothing else.
//!
//! A plain hyper 1 HTTP/1.1 server with keep-alive on tokio's default multi-threaded runtime (the
//! same runtime the service uses). For every request it reads the whole body and answers 200 with
//! the fixed JSON the service sends for a new address. It parses nothing and counts nothing, so
//! `service req/s ÷ bare req/s` in `scripts/load-test.sh` is the share of the raw HTTP throughput
//! the service keeps once it parses, validates, counts and measures each entry.
//!
//! ```text
//! cargo run --release --example bare_hyper -- 127.0.0.1:15001
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
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:15001";
const BODY: &str = r#"{"status":"success","message":"New IP logged","unique_ips":1}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or(DEFAULT_ADDR)
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!("bare_hyper listening on http://{}", listener.local_addr()?);

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors or a connection reset before accept: keep serving the rest.
            Err(err) => {
                eprintln!("accept: {err}");
                continue;
            }
        };
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle));
            // Clients dropping connections mid-request is normal under load; nothing to report.
            let _ = conn.await;
        });
    }
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
