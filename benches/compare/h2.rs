//! ssio over HTTPS with HTTP/2, as a browser uses it: many event streams
//! multiplexed on one connection.
//!
//! The coordinator writes a certificate for `localhost` before it starts
//! the server; each worker trusts exactly that certificate. A worker keeps
//! its connections in a pool and opens a new one only when the newest
//! carries [`STREAMS_PER_CONNECTION`] streams.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::repo;
use crate::support::http::bad;
use crate::support::loopback::connect;
use crate::support::sse::{connect_sid, Events};

/// Streams per connection: the most the server allows at once (hyper's
/// default of 200 concurrent streams), as a browser would fill it.
pub const STREAMS_PER_CONNECTION: usize = 200;

/// Where the bench's certificate and key live while it runs.
fn dir() -> PathBuf {
    repo::root().join("target/bench-tls")
}

/// Writes a fresh self-signed certificate for `localhost`; returns the
/// certificate and key paths for `--tls-cert` and `--tls-key`.
pub fn write_certificate() -> Result<(PathBuf, PathBuf), String> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .map_err(|e| format!("certificate: {e}"))?;
    std::fs::create_dir_all(dir()).map_err(|e| e.to_string())?;
    let (cert, key) = (dir().join("cert.pem"), dir().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key, made.signing_key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok((cert, key))
}

/// A TLS client that trusts the bench's certificate and offers only h2.
fn connector() -> io::Result<TlsConnector> {
    let pem = std::fs::read(dir().join("cert.pem"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: CertificateDer<'static> = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

type Sender = SendRequest<Empty<Bytes>>;

/// This worker's connections, newest last, with the streams each carries.
#[derive(Default)]
struct Pool {
    connector: Option<TlsConnector>,
    conns: Vec<(Sender, usize)>,
}

thread_local! {
    // Workers are single-threaded; the lock keeps concurrent opens from each
    // starting a connection of their own.
    static POOL: Rc<tokio::sync::Mutex<Pool>> = Rc::default();
}

/// A sender with room for one more stream, on a new connection if needed.
async fn sender(server: SocketAddr, salt: u32) -> io::Result<Sender> {
    let pool = POOL.with(Rc::clone);
    let mut pool = pool.lock().await;
    if let Some((send, n)) = pool.conns.last_mut() {
        if *n < STREAMS_PER_CONNECTION && !send.is_closed() {
            *n += 1;
            return Ok(send.clone());
        }
    }
    if pool.connector.is_none() {
        pool.connector = Some(connector()?);
    }
    let tcp = connect(server, salt).await?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    let tls = pool
        .connector
        .as_ref()
        .expect("set above")
        .connect(name, tcp)
        .await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(bad("the server did not pick h2"));
    }
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| bad(format!("h2 handshake: {e}")))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            eprintln!("worker: h2 connection ended: {e}");
        }
    });
    pool.conns.push((send.clone(), 1));
    Ok(send)
}

/// One event stream on a shared HTTP/2 connection.
pub struct H2Client {
    sid: String,
    send: Sender,
    body: hyper::body::Incoming,
    events: Events,
    /// Counts that arrived before `connect` returned.
    pending: Vec<i64>,
}

impl H2Client {
    /// Opens `GET /events` on a pooled connection and returns once the
    /// `connect` event arrived.
    pub async fn connect(server: SocketAddr, salt: u32) -> io::Result<H2Client> {
        let mut send = sender(server, salt).await?;
        send.ready()
            .await
            .map_err(|e| bad(format!("h2 not ready: {e}")))?;
        let req = Request::get("https://localhost/events")
            .body(Empty::new())
            .expect("a valid request");
        let res = send
            .send_request(req)
            .await
            .map_err(|e| bad(format!("GET /events: {e}")))?;
        if res.status() != 200 {
            return Err(bad(format!("GET /events answered {}", res.status())));
        }
        let mut c = H2Client {
            sid: String::new(),
            send: send.clone(),
            body: res.into_body(),
            events: Events::with_capacity(256),
            pending: Vec::new(),
        };
        let mut connected = false;
        while !connected {
            c.read().await?;
            while let Some(e) = c.events.next_event()? {
                if e.event == "connect" {
                    connected = true;
                    c.sid = connect_sid(&e.data)?;
                }
                c.pending.extend(e.user_count()?);
            }
        }
        Ok(c)
    }

    /// Leaves on purpose: `POST /close` on the same connection, then the
    /// stream is reset. A reset alone is a cut, held for the reconnect
    /// grace.
    pub async fn leave(mut self) -> io::Result<()> {
        self.send
            .ready()
            .await
            .map_err(|e| bad(format!("h2 not ready: {e}")))?;
        let req = Request::post(format!("https://localhost/close?sid={}", self.sid))
            .body(Empty::new())
            .expect("a valid request");
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|e| bad(format!("POST /close: {e}")))?;
        if res.status() != 204 {
            return Err(bad(format!("close answered {}", res.status())));
        }
        Ok(())
    }

    /// Reads the stream's next DATA frame into the event buffer.
    async fn read(&mut self) -> io::Result<()> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.events.extend(&data);
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(bad(format!("stream failed: {e}"))),
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "ended")),
            }
        }
    }

    /// Waits for the next batch of `user count` values, appended to `out`.
    pub async fn next(&mut self, out: &mut Vec<i64>) -> io::Result<()> {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
            return Ok(());
        }
        loop {
            self.read().await?;
            let before = out.len();
            while let Some(e) = self.events.next_event()? {
                out.extend(e.user_count()?);
            }
            if out.len() > before {
                return Ok(());
            }
        }
    }
}
