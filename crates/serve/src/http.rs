//! The HTTP/1.1 listener and the server's life: connections are served by hyper under one set of
//! limits (`ConnLimits`): deadlines on request headers (a slow-loris client that trickles them is
//! cut off; the same deadline closes an idle kept-alive connection), on request bodies and on
//! every write (a client that stops reading a stream is dropped), and a cap on open
//! connections; shutdown stops accepting, lets running generations finish for a grace
//! period, then ends the rest (their streams close with an error event) and closes every
//! connection.

use crate::state::App;
use crate::{Error, Result};
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Time a client has to send a request's headers, counted from the moment the connection
    /// opens or its previous response ends: it is also the idle timeout of a kept-alive
    /// connection.
    pub header_timeout: Duration,
    /// Time a request's body has to arrive once its headers have (408 beyond).
    pub body_timeout: Duration,
    /// Time one write to the client may wait for it to read (a stream whose client stopped
    /// reading): past it the connection is closed and its generation cancelled.
    pub write_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time running generations get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
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

/// Serves `router` on `listener` under `limits` (the header, body and write deadlines, the
/// connection cap) until `stop` turns true; then stops accepting and returns the open
/// connections' handle for a graceful shutdown. Every listener of frugal's goes through here,
/// so all have the same limits.
pub(crate) async fn accept(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    stop: &mut watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let body_timeout = limits.body_timeout;
    let router = router.layer(axum::middleware::map_request(move |req: Request<Body>| {
        std::future::ready(req.map(|b| Body::new(crate::body::BodyDeadline::new(b, body_timeout))))
    }));
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
            TokioIo::new(WriteDeadline::new(stream, limits.write_timeout)),
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

/// A connection whose writes must make progress within `within`: a write (or flush) that stays
/// pending longer fails with `TimedOut`, and hyper then closes the connection. Without it a
/// client that stops reading holds its stream, and the generation behind it, forever.
struct WriteDeadline<S> {
    io: S,
    within: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(io: S, within: Duration) -> Self {
        WriteDeadline {
            io,
            within,
            stalled: None,
        }
    }

    /// Passes a write's result through, arming the deadline while it is pending.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let within = self.within;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client read nothing for {within:?}"),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_deadline() {
        let (near, _far) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(near, Duration::from_millis(50));
        let e = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn writes_the_peer_reads_pass_whatever_their_total_time() {
        let (near, mut far) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 4096 {
                use tokio::io::AsyncReadExt;
                tokio::time::sleep(Duration::from_millis(5)).await;
                let n = far.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got.len()
        });
        // The reader takes over a second in all, but never a second without progress.
        let mut w = WriteDeadline::new(near, Duration::from_secs(1));
        w.write_all(&[7u8; 4096]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 4096);
    }
}
