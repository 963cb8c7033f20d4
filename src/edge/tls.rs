//! TLS: the certificate, the acceptor, and ALPN, so that browsers can speak
//! HTTP/2 to ssio.
//!
//! Over HTTP/1.1 a browser keeps at most six connections per host, and every
//! open event stream holds one of them for good: a seventh tab of the same
//! origin hangs. Over HTTP/2 every stream is multiplexed on one connection,
//! and browsers speak HTTP/2 only over TLS, so TLS is what lifts the limit.
//!
//! The certificate comes from PEM files (`--tls-cert`, `--tls-key`), read
//! with `rustls-pki-types`, or is generated at start for local work
//! (`--tls-self-signed`; its SHA-256 fingerprint is logged so a browser can
//! pin it). ALPN offers `h2` first, then `http/1.1`; [`serve`] reads the
//! protocol the client picked from the finished handshake and speaks it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ParsedCertificate;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::api::io::Io;
use crate::config::Config;
use crate::edge::accept::Prefixed;
use crate::edge::refusal::JsonRefusals;
use crate::edge::router;
use crate::edge::watch::{watch, Activity, Limits};
use crate::session::Peer;

/// ALPN protocol IDs in order of preference.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Names the generated certificate is valid for: what a developer types.
const SELF_SIGNED_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Why TLS could not be set up; the server refuses to start on any of these.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `--tls-cert` and `--tls-key` was given.
    #[error("--tls-cert and --tls-key must be given together")]
    Incomplete,
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file named on the command line.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the certificate and key (a key that does not match, say).
    #[error("certificate rejected: {0}")]
    Rejected(#[from] rustls::Error),
    /// The self-signed certificate could not be generated.
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A configured TLS acceptor, and how to describe it in the startup line.
#[derive(Clone)]
pub struct Tls {
    /// Shared by every connection; the handshake state is per connection.
    pub(crate) acceptor: TlsAcceptor,
    /// SHA-256 of the certificate's DER, colon-separated hex, for pinning.
    pub fingerprint: String,
    /// The same hash, base64, of the certificate's public key (SPKI): what
    /// Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Tls {
    /// TLS as the configuration asks for it: `None` for plain HTTP.
    pub fn from_config(config: &Config) -> Result<Option<Tls>, TlsError> {
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Tls::from_pem_files(cert, key).map(Some),
            (None, None) if config.tls_self_signed => Tls::self_signed().map(Some),
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete),
        }
    }

    /// A certificate chain and its private key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let pem_error = |path: &Path, reason: String| TlsError::Pem {
            path: path.display().to_string(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_error(cert, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(cert, "no certificate in the file".into()));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e.to_string()))?;
        Tls::new(chain, key_der)
    }

    /// A certificate generated now for the loopback names (`localhost`,
    /// `127.0.0.1`, `::1`): for local work only, since no browser trusts it
    /// without being told to.
    pub fn self_signed() -> Result<Tls, TlsError> {
        let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)?;
        let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
        Tls::new(vec![generated.cert.der().clone()], key.into())
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Tls, TlsError> {
        let fingerprint = hex_colons(&sha256(&chain[0]));
        let spki_sha256 = spki_hash(&chain[0]).unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            fingerprint,
            spki_sha256,
        })
    }
}

/// Serves one TLS connection. The handshake, the first bytes and the first
/// complete request must all arrive within `--header-timeout` of accept:
/// plain HTTP sent to this port, garbage, a handshake that stalls, or an
/// HTTP/2 preface with no request after it is dropped then, costing nobody
/// else anything. After that the connection is held to the limits in
/// `watch`.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Tls,
    io: Io,
    closing: CancellationToken,
) {
    // Borrowed from the `Io` for each use: a copy would be held for the
    // connection's whole life.
    let deadline = tokio::time::Instant::now() + io.config().header_timeout();
    // Boxed, as every long wait here is: the handshake's and the first
    // bytes' futures hold the TLS connection itself, and in place they
    // would make the task that large for the connection's whole life.
    let handshake = tokio::select! {
        r = Box::pin(tokio::time::timeout_at(deadline, tls.acceptor.accept(stream))) => r,
        _ = closing.cancelled() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
        Err(_) => return debug!("TLS handshake timed out"),
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    // hyper-util's auto builder reads the first bytes to tell the protocols
    // apart, with no deadline of its own. So the first bytes are read here,
    // in time.
    let first = tokio::select! {
        r = Box::pin(tokio::time::timeout_at(deadline, first_bytes(stream))) => r,
        _ = closing.cancelled() => return,
    };
    let Ok(Some(stream)) = first else { return };
    let activity = Activity::new(io.config().max_resets);
    let service = {
        let (io, activity) = (io.clone(), activity.clone());
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let io = io.clone();
            let flight = activity.request();
            // Boxed: hyper runs each HTTP/2 stream as a task that holds the
            // service's future inline beside the body, for the stream's
            // whole life. In place, the router's largest state (about
            // 6 KiB) would be allocated for every event stream for hours;
            // boxed, it is freed once the answer is made.
            Box::pin(async move {
                let res = router::handle(&io, req).await;
                Ok::<_, Infallible>(res.map(|body| flight.respond(body).boxed()))
            })
        })
    };
    let config = io.config();
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
        // One write in flight per stream, by default: see
        // `DEFAULT_H2_STREAM_BUFFER`. At 0 no stream would ever get room to
        // send; the flag refuses it, and a `Config` built in code gets 1.
        .max_send_buf_size(config.h2_stream_buffer.max(1) as usize)
        .max_header_list_size(config.max_header_bytes.min(u32::MAX as usize) as u32);
    let builder = match alpn.as_deref() {
        Some(b"h2") => builder.http2_only(),
        Some(b"http/1.1") => builder.http1_only(),
        _ => builder,
    };
    // HTTP/1.1 over TLS is read by hyper from the first head on.
    let stream = JsonRefusals::new(stream, io.clone());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let limits = Limits {
        first_request: deadline,
        idle: config.idle_timeout(),
        // A connection asked to go away closes once its client has
        // answered a PING; one that does not answer gets no longer than a
        // client gets to send a head.
        linger: config.header_timeout(),
    };
    // Not handed to the graceful-shutdown watcher: `watch` ends the
    // connection itself, and the task tracker lets shutdown wait.
    // Boxed: in place, hyper's connection would make the task that large
    // from accept on, handshake and idle wait included.
    if let Err(e) = Box::pin(watch(conn.into_owned(), activity, limits, closing)).await {
        debug!(error = %e, "TLS connection ended with an error");
    }
}

/// The most decrypted bytes read before hyper takes the connection.
const FIRST_BYTES: usize = 24;

/// Waits for the first decrypted bytes; `None` if the peer closed first.
async fn first_bytes<S>(mut stream: S) -> Option<Prefixed<S>>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    // Small: it is allocated while the connection waits, idle, for its
    // first request, and hyper reads the rest from the TLS layer's own
    // buffer. The length of the HTTP/2 preface's first line is enough
    // for hyper to tell the protocols apart at once.
    let mut buf = vec![0u8; FIRST_BYTES];
    let n = stream.read(&mut buf).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.truncate(n);
    Some(Prefixed::new(buf, stream))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

fn hex_colons(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo; `None`
/// for a certificate webpki cannot parse, which rustls refuses too when it
/// checks the key against it.
fn spki_hash(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    Some(BASE64.encode(sha256(&parsed.subject_public_key_info())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 certificate and key made once with `openssl req -x509`.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBljCCATugAwIBAgIUGKY9BZNlaQT7u03HWXaHMsIHLiUwCgYIKoZIzj0EAwIw\n\
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNjIxMDMxNVoYDzIxMjYxMTEy\n\
MjEwMzE1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n\
PQMBBwNCAATmhuHH9kKnLcrZXqpHjg20EXi6ym9QeKlunHfqwzWPF0YZjAUhBHAG\n\
9Q0P1MMiVwy79N3Aq1IAdMjepi8llATFo2kwZzAdBgNVHQ4EFgQUd+tA07EqN2AE\n\
bnCyCh0dLwhfdbkwHwYDVR0jBBgwFoAUd+tA07EqN2AEbnCyCh0dLwhfdbkwDwYD\n\
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID\n\
SQAwRgIhAO9yQ1ebRUuejdt++vacFHH6CZiYn6BnaAfDbHaH2vPPAiEApe6imUnz\n\
ITz0iVSSlYyOyORnjHd2d9ccsKNd6qJDx80=\n\
-----END CERTIFICATE-----";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+oUqJmnNET3i9y0d\n\
dKGlSOPt1mSCSBntkn/nlgF1WkShRANCAATmhuHH9kKnLcrZXqpHjg20EXi6ym9Q\n\
eKlunHfqwzWPF0YZjAUhBHAG9Q0P1MMiVwy79N3Aq1IAdMjepi8llATF\n\
-----END PRIVATE KEY-----";

    #[test]
    fn the_pins_of_a_known_certificate_are_the_ones_openssl_computes() {
        let chain = vec![CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let tls = Tls::new(chain, key).unwrap();
        // `openssl x509 -noout -fingerprint -sha256`
        assert_eq!(
            tls.fingerprint,
            "9A:EB:A4:58:F0:94:50:AC:D1:EF:41:0E:FD:30:A1:EE:81:2B:04:4E:62:5A:B3:04:D9:C5:EF:90:82:1B:26:73"
        );
        // `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der
        // | openssl dgst -sha256 -binary | openssl base64 -A`
        assert_eq!(
            tls.spki_sha256,
            "f4nduwh87CmngfmPpYPjDIl7Gw6lTQDOYeLCGVdCGkU="
        );
    }

    #[test]
    fn a_self_signed_certificate_has_a_fingerprint_and_a_public_key_hash() {
        let tls = Tls::self_signed().unwrap();
        assert_eq!(tls.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(tls.spki_sha256.len(), 44);
    }
}
