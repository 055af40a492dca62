//! The shared ingress server for `http` (and later `slack`) triggers.
//!
//! Served by hand with hyper rather than `axum::serve` for the limits a public listener needs:
//! a header read timeout (slow clients), a cap on open connections, and a graceful shutdown that
//! lets requests in progress finish while the gateway drains.

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Limits of the ingress listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

/// Serve `app` on `listener` until `shutdown`, then wait for requests in progress.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    // HTTP/1 only, and without the upgrade-capable connection: both of those first wait for the
    // client's opening bytes to pick a protocol, and that wait has no timeout, so a client that
    // connects and sends nothing would hold its connection (and a `max_connections` permit)
    // forever. This way `header_timeout` runs from the moment the connection is accepted.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
