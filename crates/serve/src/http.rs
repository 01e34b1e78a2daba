//! The HTTP/1.1 listener and the server's life: connections are served by hyper with a
//! deadline on request headers (a slow-loris client that trickles them is cut off) and a cap on
//! open connections; shutdown stops accepting, lets running generations finish for a grace
//! period, then ends the rest (their streams close with an error event) and closes every
//! connection.

use crate::state::App;
use crate::{Error, Result};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time running generations get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A running server; dropping it shuts it down.
pub struct Server {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` ("127.0.0.1:8000"; port 0 picks a free one) and serves `app`.
    pub fn start(app: Arc<App>, addr: &str, limits: ConnLimits) -> Result<Server> {
        let io = |source| Error::from(base::Error::io(addr, source));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("frugal-http")
            .build()
            .map_err(io)?;
        let listener = rt.block_on(TcpListener::bind(addr)).map_err(io)?;
        let local = listener.local_addr().map_err(io)?;
        let (stop, stop_rx) = watch::channel(false);
        let router = crate::api::router(app.clone());
        let done = rt.spawn(serve(listener, router, app, limits, stop_rx));
        Ok(Server {
            addr: local,
            rt: Some(rt),
            stop,
            done: Some(done),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn wait(mut self) -> Result<()> {
        let rt = self.rt.as_ref().expect("running");
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).ok();
            let term = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
        });
        eprintln!("shutting down: finishing running requests");
        self.shutdown();
        Ok(())
    }

    /// Stops accepting, lets generations finish within the grace period, ends the rest, and
    /// waits for the connections to close.
    pub fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let (Some(rt), Some(done)) = (self.rt.take(), self.done.take()) {
            let _ = rt.block_on(done);
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    app: Arc<App>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = accept(listener, router, limits, &mut stop).await;
    // New requests on open connections are refused with 503 from here on.
    app.scheduler.drain();
    let deadline = Instant::now() + limits.shutdown_grace;
    while app.scheduler.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What is still running ends now, on the engine thread; then the streams write their
    // last events and close.
    let app2 = app.clone();
    let _ = tokio::task::spawn_blocking(move || app2.scheduler.stop()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Serves `router` on `listener` under `limits` (the header deadline, the connection cap)
/// until `stop` turns true; then stops accepting and returns the open connections' handle for
/// a graceful shutdown. Every listener of frugal's goes through here, so all have the same
/// limits.
pub(crate) async fn accept(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stop: &mut watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.changed() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                // Out of file descriptors and the like: wait rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful
}
