//! [`App`]: the service. [`App::build`] does every fallible start-up step (the data directory's
//! lock, both binds), so that port 0 works and tests can read the bound addresses before
//! serving; [`App::run_until_stopped`] serves both listeners ([`crate::http::server`]) while the
//! counter reads the data directory back (`/ready` 503 until then), and on shutdown drains both
//! listeners and closes the counter's log.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, Counting};
use crate::counter::Counter;
use crate::counter::clock::SystemClock;
use crate::http::server::{ConnectionLimits, bind, reload_on_sighup, serve};
use crate::http::state::AppState;
use crate::http::tls::Tls;
use crate::http::workers::Workers;
use crate::http::{ingest, scrape};
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

impl App {
    /// Takes the data directory's lock (unless `PERSISTENCE=off`), then binds the ingest and
    /// metrics listeners on `SERVER_HOST`. Recovery waits for [`App::run_until_stopped`], so
    /// that `/ready` can answer 503 meanwhile.
    pub async fn build(config: Config) -> io::Result<App> {
        let data_dir = config
            .persistence
            .clone()
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
        let recovery = data_dir.is_some().then_some(config.http.request_timeout);
        let clock = Arc::new(SystemClock);
        let windows = config.windows.as_ref();
        let counter = match (config.counting, config.redis, recovery) {
            (Counting::Approx { lg_k }, _, _) => Counter::approx(lg_k, windows, recovery, clock),
            (Counting::Auto(settings), _, _) => Counter::auto(settings, windows, recovery, clock)?,
            (Counting::Exact, Some(redis), Some(recovery)) => {
                Counter::shared(windows, recovery, clock, redis)?
            }
            (Counting::Exact, _, _) => Counter::exact(windows, recovery, clock)?,
        };
        let state = Arc::new(AppState::new(Arc::new(counter), &config.http));
        Ok(App {
            data_dir,
            ingest,
            metrics,
            state,
            limits: ConnectionLimits {
                max_connections: config.http.max_connections,
                request_timeout: config.http.request_timeout,
                proxy_protocol: config.http.proxy_protocol,
            },
            ingest_tls: config.http.ingest_tls,
            metrics_tls: config.http.metrics_tls,
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
            state.set_stopping();
            let _ = stopper.send(true);
        });
        if self.data_dir.is_some() {
            survive_file_size_limit();
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = Workers::start(threads)?;
        let router = ingest::router(self.state.clone());
        let ingest_state = self.state.clone();
        let refusals = ingest::Refusals::default();
        let refusals_state = self.state.clone();
        let ingest = serve(
            self.ingest,
            move |client| ingest::service(ingest_state.clone(), router.clone(), client),
            self.limits,
            self.ingest_tls.clone(),
            Arc::new(move |client, status| refusals.note(&refusals_state, client, status)),
            &workers,
            stop_rx.clone(),
        );
        let metrics_service = TowerToHyperService::new(scrape::router(self.state.clone()));
        let metrics = serve(
            self.metrics,
            move |_| metrics_service.clone(),
            // Scrapes come from Prometheus directly, never through the ingest's balancer.
            ConnectionLimits {
                proxy_protocol: false,
                ..self.limits
            },
            self.metrics_tls.clone(),
            Arc::new(|_, _| {}),
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

/// Reads the data directory back into the counter, which then takes writes (and `/ready` turns
/// 200). On failure stops the listeners and returns the error.
async fn recover(
    data_dir: Option<DataDir>,
    state: Arc<AppState>,
    stop: Arc<watch::Sender<bool>>,
) -> io::Result<Option<DataDir>> {
    let Some(data_dir) = data_dir else {
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
        Ok(()) => Ok(Some(data_dir)),
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
