//! Accepting connections, serving them with hyper, and shutting down.
//!
//! `run` is the whole server; `main` only parses flags, binds and calls it,
//! and the tests call the same function on `127.0.0.1:0`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use socket2::{Domain, Socket as RawSocket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::api::io::Io;
use crate::config::Config;
use crate::edge::accept::{self, Prefixed};
use crate::edge::plain;
use crate::edge::refusal::JsonRefusals;
use crate::edge::router;
use crate::edge::server_api;
#[cfg(feature = "tls")]
use crate::edge::tls::{self, Tls};
use crate::session::Peer;
use crate::transport::request::RawRequest;
use crate::transport::{poll_raw, sse_raw};

/// Built without the `tls` feature, no listener serves TLS: the type has
/// no values, so the branch that would serve one does not exist.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum Tls {}

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
#[cfg(feature = "tls")]
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
                tracker.spawn(serve_internal(l, io.clone(), internal_done.clone(), false));
            }
            Err(e) => error!(%addr, error = %e, "could not listen for metrics"),
        }
    }
    if let Some(addr) = config.api_listen {
        match bind(addr, 128) {
            Ok(l) => {
                if let Ok(at) = l.local_addr() {
                    info!("server API on http://{at}/api/");
                }
                tracker.spawn(serve_internal(l, io.clone(), internal_done.clone(), true));
            }
            Err(e) => error!(%addr, error = %e, "could not listen for the server API"),
        }
    }
    // Idle streams take latest values from one sweeper rather than each
    // waking its own task for them, on one thread or several: on two cores
    // it costs less CPU per delivery than tasks woken on both (see the
    // benchmarks). Ends with this function, however it ends.
    let _sweeper = AbortOnDrop(tokio::spawn(io.hub().fanout().clone().sweep()));
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
                    match tls.clone() {
                        #[cfg(feature = "tls")]
                        Some(tls) => tracker.spawn(tls::serve(stream, peer, tls, io, closing)),
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
/// `GET /events` straight on the socket; a held poll or a page's plain
/// `GET`, `HEAD` or small `POST` (see `plain`) also on the socket, looping
/// back for the
/// next head; anything else through hyper, which reads that head again
/// from what was read and times later heads on a keep-alive connection
/// itself.
///
/// A function returning a block, not an `async fn`: an `async fn` keeps a
/// second copy of every argument it takes by value for as long as it runs,
/// and a polling connection runs here nearly all its life.
fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    io: Io,
    watcher: Watcher,
    closing: CancellationToken,
    tracker: TaskTracker,
) -> impl Future<Output = ()> + Send {
    let mut slot = Some(stream);
    // A polling connection's socket and cursor while a poll is held,
    // shared with the fan-out's sweeper.
    let mut lent = None;
    async move {
        let config = io.config();
        // One deadline from accept to the end of the first head.
        let mut deadline = tokio::time::Instant::now() + config.header_timeout();
        // What a client sent after a poll answered on the raw path: the start
        // of its next request.
        let mut rest = Vec::new();
        let prefix = loop {
            // Awaited in place: it holds no more than a held poll does.
            let Some(start) =
                next_bytes(slot.as_ref().expect(SOCKET), rest, deadline, &closing).await
            else {
                return;
            };
            // Boxed: its refusal path holds a 4 KiB drain buffer, and a future
            // awaited in place would make every connection's task that large
            // for its whole life, long after the head was read.
            let max = config.max_header_bytes;
            let first = tokio::select! {
                f = Box::pin(accept::first_head(slot.as_mut().expect(SOCKET), deadline, max, config, start)) => f,
                _ = closing.cancelled() => return,
            };
            // Every value here is moved whole into what is awaited next,
            // never matched in place or borrowed: a task keeps room for a
            // local that was, across every later wait, and a polling
            // connection waits below nearly all its life.
            let (request, routed) = match route(first, config) {
                Route::Stream { request, mux } => {
                    // Boxed, as every long wait here is: a task is as large
                    // as the largest state of its future, so one path
                    // awaited in place would make every connection pay for
                    // it, whichever path it takes.
                    let stream = slot.take().expect(SOCKET);
                    Box::pin(stream_raw(stream, request, mux, peer, io, tracker)).await;
                    return;
                }
                Route::Other { request, routed } => (request, routed),
                Route::Hyper(buf) => break buf,
                Route::Done => return,
            };
            let answer =
                match answer_raw(&mut slot, &mut lent, request, peer, &io, &closing, routed) {
                    Ok(answer) => answer,
                    Err(request) => break request.into_bytes(),
                };
            match answer.await {
                poll_raw::After::Next(next) => {
                    rest = next;
                    // As hyper times a keep-alive connection's next
                    // head: from the end of the last response.
                    deadline = tokio::time::Instant::now() + config.header_timeout();
                }
                poll_raw::After::Close => return,
            }
        };
        let stream = slot.take().expect(SOCKET);
        Box::pin(serve_hyper(stream, prefix, peer, io, watcher)).await;
    }
}

/// What a missing socket means: a held poll lends the socket and gives it
/// back before the connection goes on, so it is in its slot between
/// requests.
const SOCKET: &str = "the connection's socket is in its slot between requests";

/// Waits until the client has sent something of its next request, unless
/// `rest` holds some already: `rest` back, or `None` if `deadline` passed
/// first, the client left, or the server is closing.
///
/// Nothing is allocated to read a head until its first byte is here. A
/// polling client's connection waits here between its polls, and an idle
/// kept-alive connection for as long as it lives; a block held meanwhile
/// would be freed only once the head came, and a heap that many such
/// blocks came and went through keeps their holes.
async fn next_bytes(
    stream: &TcpStream,
    rest: Vec<u8>,
    deadline: tokio::time::Instant,
    closing: &CancellationToken,
) -> Option<Vec<u8>> {
    if rest.is_empty() {
        tokio::select! {
            r = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => r.ok()?,
            _ = tokio::time::sleep_until(deadline) => return None,
            _ = closing.cancelled() => return None,
        }
    }
    Some(rest)
}

/// Where a connection's head goes.
enum Route {
    /// A plain `GET /events`, or (`mux`) a browser's shared stream
    /// `GET /events?mux=1`, after its page on this connection or on a new
    /// one: served raw.
    Stream { request: RawRequest, mux: bool },
    /// Anything else that parsed: answered raw if it can be (see
    /// `answer_raw`), else by hyper. `routed` requests (a cluster node's
    /// resumes, which may belong to another node) go through the router.
    Other { request: RawRequest, routed: bool },
    /// Not HTTP/1 (the HTTP/2 preface): hyper's, with what was read.
    Hyper(Vec<u8>),
    /// Refused or gone: the connection is over.
    Done,
}

/// Where `first` goes. A function taking the head by value, so that the
/// task that awaits what it returns never holds the head itself.
fn route(first: accept::First, config: &Config) -> Route {
    let request = match first {
        accept::First::Request(request) => request,
        accept::First::Other(buf) => return Route::Hyper(buf),
        accept::First::Refused | accept::First::Gone => return Route::Done,
    };
    // A cluster node routes resumes, which may belong to another node,
    // through the router.
    let routed = config.cluster_node().is_some() && request.resumes();
    if !routed && sse_raw::sniff_mux(&request, config) {
        return Route::Stream { request, mux: true };
    }
    if !routed && sse_raw::sniff(&request) {
        return Route::Stream {
            request,
            mux: false,
        };
    }
    Route::Other { request, routed }
}

/// Starts the stream `request` asks for on `stream`: once started, it
/// gets a task of its own, exactly its size, and the connection's task
/// ends.
async fn stream_raw(
    stream: TcpStream,
    request: RawRequest,
    mux: bool,
    peer: SocketAddr,
    io: Io,
    tracker: TaskTracker,
) {
    if mux {
        if let Some(streaming) = sse_raw::start_mux(stream, request, peer, io).await {
            tracker.spawn(streaming);
        }
    } else if let Some(streaming) = sse_raw::start(stream, request, peer, io).await {
        tracker.spawn(streaming);
    }
}

/// An answer on the raw path: a held poll in place, anything else boxed.
type RawAnswer<'a> =
    Either<poll_raw::Hold<'a>, Pin<Box<dyn Future<Output = poll_raw::After> + Send + 'a>>>;

/// The raw path's answer to `request` (a poll, a handshake, or one of a
/// page's plain requests; see `poll_raw` and `plain`), or the request back
/// for hyper. `routed` requests (a cluster node's resumes) are not polled
/// here.
///
/// A function, not part of `serve`: an `async fn` keeps room for each of
/// its locals for as long as it runs, even once moved out, and a polling
/// connection waits in `serve` nearly all its life. Built here, the
/// answer's future holds only what it needs, and `serve` only a pointer.
fn answer_raw<'a>(
    slot: &'a mut Option<TcpStream>,
    lent: &'a mut Option<std::sync::Arc<poll_raw::Lent>>,
    request: RawRequest,
    peer: SocketAddr,
    io: &'a Io,
    closing: &'a CancellationToken,
    routed: bool,
) -> Result<RawAnswer<'a>, RawRequest> {
    let polled = match routed {
        true => None,
        false => poll_raw::sniff(&request, io, peer),
    };
    if let Some(ask) = polled {
        let after = request.after().to_vec();
        drop(request);
        return Ok(match ask.held() {
            // In place: a polling connection waits here nearly all its
            // life, and a box of its own would cost it an allocation.
            Ok(held) => Either::Left(poll_raw::hold(slot, lent, held, after, io, closing)),
            Err(ask) => Either::Right(Box::pin(poll_raw::serve(
                slot, lent, ask, after, io, closing,
            ))),
        });
    }
    if let Some(ask) = plain::sniff(&request, io.config()) {
        // The page's own requests, so that the stream a browser opens
        // after them on this connection is served raw.
        let after = request.after().to_vec();
        drop(request);
        let stream = slot.as_mut().expect(SOCKET);
        return Ok(Either::Right(Box::pin(plain::serve(
            stream, ask, after, peer, io, closing,
        ))));
    }
    Err(request)
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
    let stream = JsonRefusals::new(Prefixed::new(prefix, stream), io.clone());
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
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Serves `/metrics` and the probes on the `--metrics-listen` address, or
/// (`api`) the server API on the `--api-listen` address, until `done`.
async fn serve_internal(listener: TcpListener, io: Io, done: CancellationToken, api: bool) {
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
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let io = io.clone();
                async move {
                    let res = if api {
                        server_api::handle_listen(&io, req).await
                    } else {
                        router::handle_internal(&io, &req)
                    };
                    Ok::<_, Infallible>(res)
                }
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
