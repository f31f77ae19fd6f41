//! The application: binds both listeners, then serves them until a shutdown future fires.
//!
//! [`App::build`] does every fallible start-up step, so that port 0 works and tests can read the
//! bound addresses before serving; [`App::run_until_stopped`] drains both listeners on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::ingest::{self, AppState};
use crate::metrics;
use crate::store::Store;

/// A bound, not yet serving, service.
#[derive(Debug)]
pub struct App {
    ingest: TcpListener,
    metrics: TcpListener,
    state: Arc<AppState>,
}

impl App {
    /// Binds the ingest and metrics listeners on `SERVER_HOST`.
    pub async fn build(config: Config) -> io::Result<App> {
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
        let state = Arc::new(AppState::new(Store::exact(), &config));
        Ok(App {
            ingest,
            metrics,
            state,
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

    /// Serves both listeners until `shutdown` completes, then stops accepting, lets requests in
    /// flight finish and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = self.state.clone();
        tokio::spawn(async move {
            shutdown.await;
            state.set_ready(false);
            let _ = stop_tx.send(true);
        });
        let ingest = serve(
            self.ingest,
            ingest::service(self.state.clone()),
            stop_rx.clone(),
        );
        let metrics = serve(
            self.metrics,
            TowerToHyperService::new(metrics::router(self.state.clone())),
            stop_rx,
        );
        self.state.set_ready(true);
        tokio::join!(ingest, metrics);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Accepts HTTP/1.1 connections on `listener` until `stop` turns true, then waits for the
/// connections' requests in flight to finish.
///
/// A plain hyper connection per socket rather than `axum::serve`: the same transport as the bare
/// baseline of `make load-test`, without protocol sniffing or upgrade support we do not use.
async fn serve<S>(listener: TcpListener, service: S, mut stop: watch::Receiver<bool>)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
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
        let connection =
            http1::Builder::new().serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
