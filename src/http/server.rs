//! The life of a connection: the listener bound, the `MAX_CONNECTIONS` permit taken before
//! accepting, the thread that serves it ([`super::workers`]), the TLS handshake, the watchdog
//! that closes it when it stays silent for `REQUEST_TIMEOUT` (`Activity`), and its end at
//! shutdown. Certificates are re-read on SIGHUP.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::workers::Workers;
use crate::http::tls::Tls;

/// What a listener does with each request the HTTP layer refused before it reached the service
/// (a malformed request line or header, 414, 431), given the status that was answered.
pub type OnRefused = Arc<dyn Fn(SocketAddr, StatusCode) + Send + Sync>;

/// The status hyper answers a request head it cannot parse with, or `None` when `e` is not such
/// a refusal (the client left, a reply could not be written).
fn refused_status(e: &hyper::Error) -> Option<StatusCode> {
    if e.is_parse_too_large() {
        // One predicate for both; only the message tells a long URI from a large head.
        Some(if e.to_string().contains("URI") {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        })
    } else if e.is_parse() && !e.is_parse_status() && !e.is_parse_version_h2() {
        Some(StatusCode::BAD_REQUEST)
    } else {
        None
    }
}

/// What every connection of a listener is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// `MAX_CONNECTIONS`: open connections per listener.
    pub max_connections: u32,
    /// `REQUEST_TIMEOUT`: how long a connection may go without a complete request head, counted
    /// from connecting or from the previous reply (request bodies have their own deadline in
    /// [`super::ingest`]).
    pub request_timeout: Duration,
    /// `PROXY_PROTOCOL`: each connection starts with a PROXY protocol header naming the client
    /// ([`super::proxy_protocol`]); one without is closed, counted as refused with 400.
    pub proxy_protocol: bool,
}

/// When a connection last finished a request, or that it is serving one now.
///
/// The watchdog that closes silent connections reads it once per `REQUEST_TIMEOUT`, instead of
/// a timer being reset for every request (docs/DESIGN.md, "HTTP").
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Nanoseconds after `opened` at which the connection went idle; [`BUSY`] while serving.
    idle_since: AtomicU64,
    /// Whether the request being served has its whole body: shutdown waits only for those.
    phase: RequestPhase,
}

const BUSY: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
            phase: RequestPhase::default(),
        }
    }

    /// A request head has arrived; `complete` when it has no body to wait for.
    fn begin(&self, complete: bool) {
        let phase = if complete {
            Phase::Arrived
        } else {
            Phase::Receiving
        };
        self.phase.set(phase);
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    fn end(&self) {
        self.phase.set(Phase::Replied);
        let now = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(BUSY - 1);
        self.idle_since.store(now, Ordering::Relaxed);
    }

    /// Completes once shutdown has begun (`stop`) and the connection is not answering a request
    /// whose body has fully arrived: idle, halfway through a request head or body, or done.
    async fn interruptible(&self, stop: &mut watch::Receiver<bool>) {
        /// Long enough for hyper to write a reply, after which it closes the connection itself.
        const WRITING: Duration = Duration::from_millis(200);
        stopped(stop).await;
        let mut replied = None;
        loop {
            match self.phase.get() {
                Phase::Receiving => return,
                Phase::Arrived => replied = None,
                Phase::Replied => {
                    let since = *replied.get_or_insert_with(Instant::now);
                    if since.elapsed() >= WRITING {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Completes once the connection has been idle for `timeout`: no request head completed
    /// since connecting or since the last reply.
    async fn silent_for(&self, timeout: Duration) {
        let mut deadline = self.opened + timeout;
        loop {
            tokio::time::sleep_until(deadline.into()).await;
            deadline = match self.idle_since.load(Ordering::Relaxed) {
                BUSY => Instant::now() + timeout,
                since => self.opened + Duration::from_nanos(since) + timeout,
            };
            if deadline <= Instant::now() {
                return;
            }
        }
    }
}

/// Ends a request's [`Activity`] however its future ends, dropped included.
struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Accepts HTTP/1.1 connections on `listener` until `stop` turns true, then waits for the
/// connections' requests in flight to finish. `service` makes each connection's service from
/// the client's address; `on_refused` hears of the requests refused before reaching it.
///
/// A plain hyper connection per socket rather than `axum::serve`: the same transport as the bare
/// baseline of `make load-test`, without protocol sniffing or upgrade support we do not use.
pub async fn serve<S>(
    listener: TcpListener,
    service: impl Fn(IpAddr) -> S + Send + Sync + 'static,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    on_refused: OnRefused,
    workers: &Workers,
    mut stop: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = Arc::new(service);
    let graceful = GracefulShutdown::new();
    // A permit per open connection, taken before accepting: past the limit, new connections
    // wait in the kernel's listen queue instead of costing memory here.
    let open = Arc::new(Semaphore::new(limits.max_connections as usize));
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        // Off this runtime's reactor, so that the worker that serves it can take it.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection over");
                continue;
            }
        };
        let activity = Arc::new(Activity::new());
        // Made once the client is known: behind a PROXY header, after reading it.
        let make_service = {
            let (service, activity) = (service.clone(), activity.clone());
            move |client: IpAddr| {
                let inner = service(client);
                hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    activity.begin(hyper::body::Body::is_end_stream(request.body()));
                    request.extensions_mut().insert(activity.phase.clone());
                    let serving = Serving(activity.clone());
                    let reply = inner.call(request);
                    async move {
                        let reply = reply.await;
                        drop(serving);
                        reply
                    }
                })
            }
        };
        let connection = Connection {
            peer,
            acceptor: tls.as_ref().map(|tls| tls.acceptor()),
            watcher: graceful.watcher(),
            on_refused: on_refused.clone(),
            activity,
            limits,
            stop: stop.clone(),
            _permit: permit,
        };
        workers.run(move || connection.serve(stream, make_service));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accepted connection and what it is held to, until a worker serves it.
struct Connection {
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    watcher: Watcher,
    on_refused: OnRefused,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    /// Turns true at shutdown.
    stop: watch::Receiver<bool>,
    /// The connection's `MAX_CONNECTIONS` permit, returned when it ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection on the current runtime: the TLS handshake if any, then HTTP/1.1
    /// until the client leaves, with a watchdog that closes it when it stays silent, and at
    /// shutdown unless it is answering a request whose body has arrived.
    fn serve<F, S>(self, stream: std::net::TcpStream, make_service: F)
    where
        F: FnOnce(IpAddr) -> S + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body> + Send + 'static,
        S::Future: Send + 'static,
    {
        let Connection {
            peer,
            acceptor,
            watcher,
            on_refused,
            activity,
            limits,
            mut stop,
            _permit: permit,
        } = self;
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot take the connection over");
                return;
            }
        };
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let mut stream = stream;
            let client = if limits.proxy_protocol {
                match super::proxy_protocol::read_header(&mut stream).await {
                    Ok(client) => client.unwrap_or(peer),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "PROXY protocol header refused");
                        on_refused(peer, StatusCode::BAD_REQUEST);
                        drop((permit, ended_tx));
                        return;
                    }
                }
            } else {
                peer
            };
            let watched = make_service(client.ip());
            let peer = client;
            let http = http1::Builder::new();
            let ended = match acceptor {
                None => {
                    let connection = http.serve_connection(TokioIo::new(stream), watched);
                    watcher.watch(connection).await
                }
                // The handshake runs here, not in the accept loop, so a slow client delays
                // nobody else; the watchdog below bounds it like a request head.
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let connection = http.serve_connection(TokioIo::new(stream), watched);
                        watcher.watch(connection).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                },
            };
            if let Err(e) = ended {
                match refused_status(&e) {
                    Some(status) => {
                        tracing::debug!(%peer, %status, error = %e, "request refused before routing");
                        on_refused(peer, status);
                    }
                    None => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                }
            }
            drop((permit, ended_tx));
        });
        // On its own task, so that it wakes once per REQUEST_TIMEOUT, not with every request.
        tokio::spawn(async move {
            tokio::select! {
                () = activity.silent_for(limits.request_timeout) => {
                    tracing::debug!(%peer, "closing a connection silent for REQUEST_TIMEOUT");
                    serving.abort();
                }
                () = activity.interruptible(&mut stop) => {
                    tracing::debug!(%peer, "closing a connection at shutdown");
                    serving.abort();
                }
                _ = ended_rx => {}
            }
        });
    }
}

/// Re-reads the certificates on every SIGHUP; a failed reload keeps the old certificate.
pub async fn reload_on_sighup(certificates: Vec<Arc<Tls>>) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates will not reload");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        if certificates.is_empty() {
            tracing::info!("SIGHUP: no certificates to reload");
        }
        for tls in &certificates {
            match tls.reload() {
                Ok(()) => tracing::info!("certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "certificate reload failed; keeping the old one")
                }
            }
        }
    }
}

/// Completes once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Binds the listener `name` (in the error) to `addr`.
pub async fn bind(name: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the {name} listener to {addr}: {e}"),
        )
    })
}

/// Where the request a connection is serving stands: shared by the connection, which at
/// shutdown waits only for requests whose body has arrived, and `POST /logs`, which says when
/// its body has (a request without a body has it from the start).
#[derive(Debug, Clone, Default)]
pub struct RequestPhase(Arc<AtomicU8>);

/// The states of a [`RequestPhase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request yet, or its head or body still arriving.
    Receiving,
    /// The whole request has arrived and is being answered.
    Arrived,
    /// The reply is being written (or was, and the connection waits for the next request).
    Replied,
}

impl RequestPhase {
    /// The current state.
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            1 => Phase::Arrived,
            2 => Phase::Replied,
            _ => Phase::Receiving,
        }
    }

    /// Sets the state.
    pub fn set(&self, phase: Phase) {
        let value = match phase {
            Phase::Receiving => 0,
            Phase::Arrived => 1,
            Phase::Replied => 2,
        };
        self.0.store(value, Ordering::Release);
    }
}
