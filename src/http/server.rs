//! The server: binds both listeners, then serves them until a shutdown future fires.
//!
//! [`App::build`] does every fallible start-up step (the data directory's lock, both binds), so
//! that port 0 works and tests can read the bound addresses before serving;
//! [`App::run_until_stopped`] reads the data directory back while serving (`/ready` 503 until
//! then), and on shutdown drains both listeners and syncs the log.
//! In between, this module owns the life of a connection: the `MAX_CONNECTIONS` permit taken
//! before accepting, the thread that serves it (`Workers`: a single-threaded runtime per core),
//! the TLS handshake, and the watchdog that closes it when it stays silent for `REQUEST_TIMEOUT`
//! (`Activity`). Certificates are re-read on SIGHUP.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::ingest::{self, Phase, RequestPhase};
use super::scrape;
use super::state::AppState;
use crate::config::Config;
use crate::counter::Counter;
use crate::http::tls::Tls;
use crate::wal::DataDir;

/// A bound, not yet serving, service.
#[derive(Debug)]
pub struct App {
    data_dir: Option<DataDir>,
    ingest: TcpListener,
    metrics: TcpListener,
    state: Arc<AppState>,
    limits: ConnectionLimits,
    ingest_tls: Option<Arc<Tls>>,
    metrics_tls: Option<Arc<Tls>>,
}

/// What every connection of a listener is held to.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// `MAX_CONNECTIONS`: open connections per listener.
    max_connections: u32,
    /// `REQUEST_TIMEOUT`: how long a connection may go without a complete request head, counted
    /// from connecting or from the previous reply (request bodies have their own deadline in
    /// [`ingest`]).
    request_timeout: Duration,
}

/// When a connection last finished a request, or that it is serving one now.
///
/// The watchdog that closes silent connections reads it once per `REQUEST_TIMEOUT`, instead of
/// a timer being reset for every request (hyper's `header_read_timeout` cost a tenth of the
/// service's instructions per request, callgrind).
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

impl App {
    /// Takes the data directory's lock (unless `PERSISTENCE=off`), then binds the ingest and
    /// metrics listeners on `SERVER_HOST`. Recovery waits for [`App::run_until_stopped`], so
    /// that `/ready` can answer 503 meanwhile.
    pub async fn build(config: Config) -> io::Result<App> {
        let data_dir = config
            .persistence()
            .map(DataDir::open)
            .transpose()
            .map_err(io::Error::other)?;
        let ingest = bind(
            "ingest",
            SocketAddr::new(config.server_host, config.log_port),
        )
        .await?;
        let metrics = bind(
            "metrics",
            SocketAddr::new(config.server_host, config.metrics_port),
        )
        .await?;
        let counter = if data_dir.is_some() {
            Counter::persistent(config.request_timeout)
        } else {
            Counter::in_memory()
        };
        let state = Arc::new(AppState::new(Arc::new(counter), &config));
        Ok(App {
            data_dir,
            ingest,
            metrics,
            state,
            limits: ConnectionLimits {
                max_connections: config.max_connections,
                request_timeout: config.request_timeout,
            },
            ingest_tls: config.ingest_tls,
            metrics_tls: config.metrics_tls,
        })
    }

    /// Where the ingest listener is bound.
    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the metrics listener is bound.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves both listeners while reading the data directory back (`/ready` 503 until done),
    /// until `shutdown` completes; then stops accepting, lets requests in flight finish, syncs
    /// the log and returns. A damaged data directory stops the service with an error naming
    /// the file and offset.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let state = self.state.clone();
        let stopper = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            state.set_ready(false);
            let _ = stopper.send(true);
        });
        if self.data_dir.is_some() {
            survive_file_size_limit();
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = Workers::start(threads)?;
        let router = ingest::router(self.state.clone());
        let ingest_state = self.state.clone();
        let ingest = serve(
            self.ingest,
            move |client| ingest::service(ingest_state.clone(), router.clone(), client),
            self.limits,
            self.ingest_tls.clone(),
            &workers,
            stop_rx.clone(),
        );
        let metrics_service = TowerToHyperService::new(scrape::router(self.state.clone()));
        let metrics = serve(
            self.metrics,
            move |_| metrics_service.clone(),
            self.limits,
            self.metrics_tls.clone(),
            &workers,
            stop_rx,
        );
        let certificates: Vec<Arc<Tls>> = [self.ingest_tls, self.metrics_tls]
            .into_iter()
            .flatten()
            .collect();
        // Also without certificates: SIGHUP's default action would end the process.
        tokio::spawn(reload_on_sighup(certificates));
        let recovery = recover(self.data_dir, self.state.clone(), stop_tx);
        let ((), (), recovered) = tokio::join!(ingest, metrics, recovery);
        // Every connection has ended; the workers' queues close and their threads end.
        drop(workers);
        if let Some(data_dir) = recovered? {
            let counter = self.state.counter.clone();
            tokio::task::spawn_blocking(move || counter.close())
                .await
                .map_err(io::Error::other)??;
            drop(data_dir);
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Reads the data directory back into the counter, then lets writes through and turns
/// `/ready` 200. On failure stops the listeners and returns the error. Without persistence the
/// service is ready at once.
async fn recover(
    data_dir: Option<DataDir>,
    state: Arc<AppState>,
    stop: Arc<watch::Sender<bool>>,
) -> io::Result<Option<DataDir>> {
    let Some(data_dir) = data_dir else {
        state.set_ready(true);
        return Ok(None);
    };
    let counter = state.counter.clone();
    let (data_dir, recovered) = tokio::task::spawn_blocking(move || {
        let recovered = counter.recover(&data_dir);
        (data_dir, recovered)
    })
    .await
    .map_err(io::Error::other)?;
    match recovered {
        Ok(()) => {
            if !*stop.borrow() {
                state.set_ready(true);
            }
            Ok(Some(data_dir))
        }
        Err(e) => {
            let _ = stop.send(true);
            Err(io::Error::other(e))
        }
    }
}

/// Under a file size limit (`ulimit -f`) a write past it raises SIGXFSZ, whose default action
/// ends the process. Handled, the write fails with `EFBIG` instead and is answered 503 like a
/// full disk.
fn survive_file_size_limit() {
    const SIGXFSZ: i32 = 25; // Linux, on every architecture Rust supports there.
    match signal(SignalKind::from_raw(SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move { while signals.recv().await.is_some() {} });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGXFSZ"),
    }
}

/// Accepts HTTP/1.1 connections on `listener` until `stop` turns true, then waits for the
/// connections' requests in flight to finish. `service` makes each connection's service from
/// the client's address.
///
/// A plain hyper connection per socket rather than `axum::serve`: the same transport as the bare
/// baseline of `make load-test`, without protocol sniffing or upgrade support we do not use.
async fn serve<S>(
    listener: TcpListener,
    service: impl Fn(IpAddr) -> S,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    workers: &Workers,
    mut stop: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
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
        let inner = service(peer.ip());
        let watched = {
            let activity = activity.clone();
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
        };
        let connection = Connection {
            peer,
            acceptor: tls.as_ref().map(|tls| tls.acceptor()),
            watcher: graceful.watcher(),
            activity,
            limits,
            stop: stop.clone(),
            _permit: permit,
        };
        workers.run(move || connection.serve(stream, watched));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accepted connection and what it is held to, until a worker serves it.
struct Connection {
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    watcher: Watcher,
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
    fn serve<S>(self, stream: std::net::TcpStream, watched: S)
    where
        S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body> + Send + 'static,
        S::Future: Send + 'static,
    {
        let Connection {
            peer,
            acceptor,
            watcher,
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
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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

/// A connection's work, to run on a worker's runtime.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that serve connections, each with a single-threaded runtime; the thread running
/// [`App::run_until_stopped`] is one of them. A connection stays on the thread it is handed to,
/// so serving its requests takes no cross-thread wake-ups: with tokio's work-stealing runtime
/// the service kept 0.81 of the bare-hyper rate of `make load-test` (median of 5 rounds), with
/// this 0.92. The price is tail latency when the cores are oversubscribed (wrk on the same two
/// cores): a thread's connections wait while it is off the CPU, where a work-stealing runtime
/// would hand them to the other thread (p99 1.2 ms -> 4 ms in that test). Connections are dealt
/// round-robin, one per thread in turn; the one listener per port stays, so no second process
/// can join it as `SO_REUSEPORT` would allow.
struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// This thread and `threads - 1` more.
    fn start(threads: usize) -> io::Result<Workers> {
        let mut queues = Vec::new();
        for n in 1..threads {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("ip-counter-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            job();
                        }
                    });
                })?;
            queues.push(tx);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `job` on the next thread in turn: here, or on a worker.
    fn run(&self, job: impl FnOnce() + Send + 'static) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % (self.queues.len() + 1);
        match turn.checked_sub(1).map(|i| &self.queues[i]) {
            // A worker that is gone has panicked; its turn falls to this thread.
            Some(queue) => {
                if let Err(mpsc::error::SendError(job)) = queue.send(Box::new(job)) {
                    job();
                }
            }
            None => job(),
        }
    }
}

/// Re-reads the certificates on every SIGHUP; a failed reload keeps the old certificate.
async fn reload_on_sighup(certificates: Vec<Arc<Tls>>) {
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

async fn bind(name: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the {name} listener to {addr}: {e}"),
        )
    })
}
