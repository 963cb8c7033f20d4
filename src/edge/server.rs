//! Accepting connections, serving them with hyper, and shutting down.
//!
//! `run` is the whole server; `main` only parses flags, binds and calls it,
//! and the tests call the same function on `127.0.0.1:0`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown, Watcher};
use socket2::{Domain, Socket as RawSocket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::api::io::Io;
use crate::edge::accept::{self, Prefixed};
use crate::edge::router;
use crate::edge::tls::Tls;
use crate::session::Peer;
use crate::transport::http::ResponseBody;
use crate::transport::{poll_raw, sse_raw};

/// Binds a listener with `backlog` pending connections (tokio's default of
/// 128 drops bursts of clients reconnecting together).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = RawSocket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Serves `io` on `listener` until `shutdown` completes, then ends every
/// session with "server shutdown", lets open connections finish for up to
/// `--shutdown-timeout`, and returns.
pub async fn run(listener: TcpListener, io: Io, shutdown: impl Future) {
    serve_all(listener, io, None, shutdown).await
}

/// [`run`] over TLS: every connection is a TLS handshake (within
/// `--header-timeout`), then HTTP/2 or HTTP/1.1 as ALPN chose, through
/// hyper-util's auto builder.
pub async fn run_tls(listener: TcpListener, io: Io, tls: Tls, shutdown: impl Future) {
    serve_all(listener, io, Some(tls), shutdown).await
}

async fn serve_all(listener: TcpListener, io: Io, tls: Option<Tls>, shutdown: impl Future) {
    let graceful = GracefulShutdown::new();
    // Every connection task, whichever way it is served, so shutdown can wait
    // for all of them.
    let tracker = TaskTracker::new();
    // Connections still waiting for their first request stop waiting.
    let closing = CancellationToken::new();
    let config = io.config().clone();
    if let Err(e) = io.start().await {
        // Serve this node's own sessions anyway; the backend may come back.
        error!(error = %e, "backend did not start");
    }
    // The internal address outlives the public one, so probes can watch
    // the drain.
    let internal_done = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        match bind(addr, 128) {
            Ok(l) => {
                if let Ok(at) = l.local_addr() {
                    info!("metrics on http://{at}/metrics");
                }
                tracker.spawn(serve_internal(l, io.clone(), internal_done.clone()));
            }
            Err(e) => error!(%addr, error = %e, "could not listen for metrics"),
        }
    }
    // One thread runs every task: let idle streams take latest values from
    // one sweeper rather than each waking its own task for them. Ends with
    // this function, however it ends.
    let _sweeper = (tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread)
        .then(|| AbortOnDrop(tokio::spawn(io.hub().fanout().clone().sweep())));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = tune(&stream, &io) {
                        debug!(%peer, error = %e, "could not set socket options");
                    }
                    let (io, closing) = (io.clone(), closing.clone());
                    match &tls {
                        Some(tls) => tracker.spawn(serve_tls(stream, peer, tls.clone(), io, closing)),
                        None => {
                            let watcher = graceful.watcher();
                            tracker.spawn(serve(stream, peer, io, watcher, closing, tracker.clone()))
                        }
                    };
                }
                Err(e) => accept_error(e).await,
            },
        }
    }
    drop(listener);
    info!("shutting down");
    closing.cancel();
    io.shutdown();
    tracker.close();
    let all_done = async {
        internal_done.cancel();
        graceful.shutdown().await;
        tracker.wait().await;
    };
    tokio::select! {
        _ = all_done => debug!("all connections closed"),
        _ = tokio::time::sleep(config.shutdown_timeout()) => warn!("shutdown deadline passed with connections still open"),
    }
    if let Err(e) = io.close().await {
        warn!(error = %e, "backend did not close cleanly");
    }
}

/// A task that ends when this guard does.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one connection: reads its first head (see `accept`), then a plain
/// `GET /events` straight on the socket, anything else through hyper, which
/// reads the first head again from what was read and times later heads on
/// a keep-alive connection itself.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    io: Io,
    watcher: Watcher,
    closing: CancellationToken,
    tracker: TaskTracker,
) {
    let config = io.config();
    // One deadline from accept to the end of the first head.
    let mut deadline = tokio::time::Instant::now() + config.header_timeout();
    let mut stream = stream;
    // What a client sent after a poll answered on the raw path: the start
    // of its next request.
    let mut rest = Vec::new();
    let prefix = loop {
        // Boxed: its refusal path holds a 4 KiB drain buffer, and a future
        // awaited in place would make every connection's task that large
        // for its whole life, long after the head was read.
        let max = config.max_header_bytes;
        let first = tokio::select! {
            f = Box::pin(accept::first_head(&mut stream, deadline, max, config, rest)) => f,
            _ = closing.cancelled() => return,
        };
        match first {
            accept::First::Request(request) => {
                // A cluster node routes resumes, which may belong to
                // another node, through the router.
                let routed = config.cluster_node().is_some() && request.resumes();
                if !routed && sse_raw::sniff(&request) {
                    // Boxed, as every long wait here is: a task is as large
                    // as the largest state of its future, so one path
                    // awaited in place would make every connection pay for
                    // it, whichever path it takes.
                    let start = sse_raw::start(stream, request, peer, io.clone());
                    if let Some(streaming) = Box::pin(start).await {
                        // The stream gets a task of its own, exactly its
                        // size, and this one ends.
                        tracker.spawn(streaming);
                    }
                    return;
                }
                let ask = if routed {
                    None
                } else {
                    poll_raw::sniff(&request, &io, peer)
                };
                if let Some(ask) = ask {
                    let after = request.after().to_vec();
                    drop(request);
                    match Box::pin(poll_raw::serve(&mut stream, ask, after, &io, &closing)).await {
                        poll_raw::After::Next(next) => {
                            rest = next;
                            // As hyper times a keep-alive connection's next
                            // head: from the end of the last response.
                            deadline = tokio::time::Instant::now() + config.header_timeout();
                            continue;
                        }
                        poll_raw::After::Close => return,
                    }
                }
                break request.into_bytes();
            }
            accept::First::Other(buf) => break buf,
            accept::First::Refused | accept::First::Gone => return,
        }
    };
    Box::pin(serve_hyper(stream, prefix, peer, io, watcher)).await;
}

/// Serves a connection through hyper, which reads `prefix` (what was read
/// of its first request) before the socket, and times later heads on a
/// keep-alive connection itself.
async fn serve_hyper(
    stream: TcpStream,
    prefix: Vec<u8>,
    peer: SocketAddr,
    io: Io,
    watcher: Watcher,
) {
    let header_timeout = io.config().header_timeout();
    let max_buf = io.config().max_header_bytes.max(8192);
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let io = io.clone();
        async move { Ok::<_, Infallible>(router::handle(&io, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(Prefixed::new(prefix, stream)), service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Serves `/metrics` and the probes on the `--metrics-listen` address
/// until `done`.
async fn serve_internal(listener: TcpListener, io: Io, done: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = done.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let io = io.clone();
        let done = done.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let res = router::handle_internal(&io, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = done.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Serves one TLS connection. The handshake and then the first bytes of
/// the first request must each arrive within `--header-timeout`: plain HTTP
/// sent to this port, garbage, or a handshake that stalls is dropped then,
/// costing nobody else anything.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Tls,
    io: Io,
    closing: CancellationToken,
) {
    let config = io.config().clone();
    let handshake = tokio::select! {
        r = tokio::time::timeout(config.header_timeout(), tls.acceptor.accept(stream)) => r,
        _ = closing.cancelled() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
        Err(_) => return debug!("TLS handshake timed out"),
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    // hyper-util's auto builder reads the first bytes to tell the protocols
    // apart, with no deadline of its own; an HTTP/2 connection has no
    // header timeout either. So the first bytes are read here, in time.
    let first = tokio::select! {
        r = tokio::time::timeout(config.header_timeout(), first_bytes(stream)) => r,
        _ = closing.cancelled() => return,
    };
    let Ok(Some(stream)) = first else { return };
    let open = Arc::new(AtomicUsize::new(0));
    let service = {
        let (io, open) = (io.clone(), open.clone());
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let (io, open) = (io.clone(), open.clone());
            async move {
                let res = router::handle(&io, req).await;
                Ok::<_, Infallible>(res.map(|body| Counted::new(body, open).boxed()))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout())
        .max_buf_size(config.max_header_bytes.max(8192));
    // HTTP/2 PINGs give the same half-open bound as the TCP user timeout:
    // a peer that answers none for pingTimeout is gone.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.ping_interval())
        .keep_alive_timeout(config.ping_timeout())
        .max_header_list_size(config.max_header_bytes.min(u32::MAX as usize) as u32);
    let builder = match alpn.as_deref() {
        Some(b"h2") => builder.http2_only(),
        Some(b"http/1.1") => builder.http1_only(),
        _ => builder,
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let conn = LastWordsFirst {
        conn: Box::pin(conn.into_owned()),
        closing: Box::pin(closing.cancelled_owned()),
        closing_seen: false,
        open,
        asked: false,
    };
    // Not handed to the graceful-shutdown watcher: `LastWordsFirst` ends
    // the connection itself, and the task tracker lets shutdown wait.
    if let Err(e) = conn.await {
        debug!(error = %e, "TLS connection ended with an error");
    }
}

/// A response body that counts itself among its connection's open ones.
struct Counted {
    body: ResponseBody,
    open: Arc<AtomicUsize>,
}

impl Counted {
    fn new(body: ResponseBody, open: Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Ordering::AcqRel);
        Counted { body, open }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A TLS connection that, at shutdown, sends GOAWAY only after every open
/// response ended: each stream's `disconnect` goes out first, and a client
/// reading the connection sees its streams end before the connection does.
/// HTTP/2 writes a pending GOAWAY ahead of buffered stream data, so the
/// connection is polled once more (which flushes that data) before it is
/// asked to go away.
struct LastWordsFirst<C> {
    conn: Pin<Box<C>>,
    closing: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    closing_seen: bool,
    open: Arc<AtomicUsize>,
    asked: bool,
}

impl<C> Future for LastWordsFirst<C>
where
    C: GracefulConnection,
{
    type Output = Result<(), C::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.closing_seen && this.closing.as_mut().poll(cx).is_ready() {
            this.closing_seen = true;
        }
        loop {
            if let Poll::Ready(r) = this.conn.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            // Streams end on their own tasks, and each end wakes this one
            // to write it, so this check runs again after the last.
            if this.closing_seen && !this.asked && this.open.load(Ordering::Acquire) == 0 {
                this.asked = true;
                this.conn.as_mut().graceful_shutdown();
                continue;
            }
            return Poll::Pending;
        }
    }
}

/// Waits for the first decrypted bytes; `None` if the peer closed first.
async fn first_bytes<S>(mut stream: S) -> Option<Prefixed<S>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.truncate(n);
    Some(Prefixed::new(buf, stream))
}

/// Small SSE events must leave at once, and a peer that stops acknowledging
/// data for pingTimeout is dead: the kernel then fails the socket, hyper
/// drops the body, and the session ends with "transport close" once its
/// reconnect grace is over (which is why the kernel gets the grace less).
fn tune(stream: &TcpStream, io: &Io) -> io::Result<()> {
    stream.set_nodelay(true)?;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    socket2::SockRef::from(stream).set_tcp_user_timeout(Some(io.config().user_timeout()))?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let _ = io;
    Ok(())
}

/// Whether an accept failed for want of a file descriptor: EMFILE (this
/// process's limit) or ENFILE (the system's). std has no `ErrorKind` for
/// either, so the codes are compared by name.
#[cfg(unix)]
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Elsewhere every accept error gets the short back-off.
#[cfg(not(unix))]
fn out_of_descriptors(_: &io::Error) -> bool {
    false
}

/// Out of file descriptors (or similar) is transient: back off briefly
/// instead of spinning, keep serving the connections we have, and accept
/// again once descriptors free up.
async fn accept_error(e: io::Error) {
    if out_of_descriptors(&e) {
        warn!(error = %e, "accept failed: out of file descriptors; backing off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        debug!(error = %e, "accept failed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
