//! [`Io`] as a tower `Service`, to mount under a path of another hyper (or
//! axum, or any tower-based) app.
//!
//! `io.service_at("/socket")` answers `/socket/events`, `/socket/poll`,
//! `/socket/emit` ... by stripping the prefix and calling [`Io::handle`];
//! anything outside the prefix is a 404, so the app routes first and hands
//! over only its ssio paths. The browser client then connects with
//! `io('/socket')`.
//!
//! Embedded, every SSE stream is served by the host's hyper connection and
//! keeps hyper's per-connection read and write buffers for its whole life;
//! the `ssio` binary's accept loop writes plain SSE streams straight on the
//! socket instead (see `transport::sse_raw`). The README gives both
//! figures.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::{Request, Response, Uri};

use crate::api::io::Io;
use crate::error::Error;
use crate::transport::http::{self, ResponseBody};

/// A tower `Service` answering ssio's routes under a path prefix.
#[derive(Clone, Debug)]
pub struct IoService {
    /// The server.
    io: Io,
    /// The mount point, without a trailing slash ("" at the root).
    prefix: Arc<str>,
}

impl Io {
    /// This server as a tower `Service` at the root of its host.
    pub fn service(&self) -> IoService {
        self.service_at("")
    }

    /// This server as a tower `Service` mounted at `prefix` (e.g.
    /// `"/socket"`).
    pub fn service_at(&self, prefix: &str) -> IoService {
        IoService {
            io: self.clone(),
            prefix: Arc::from(prefix.trim_end_matches('/')),
        }
    }
}

impl IoService {
    /// The request's URI with the prefix taken off its path, or `None` if
    /// the path is not under the prefix.
    fn strip(&self, uri: &Uri) -> Option<Uri> {
        let path = uri.path();
        let rest = path.strip_prefix(&*self.prefix)?;
        if !(rest.starts_with('/') || self.prefix.is_empty()) {
            return None;
        }
        let pq = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        Uri::builder().path_and_query(pq).build().ok()
    }
}

impl<B> tower_service::Service<Request<B>> for IoService
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let io = self.io.clone();
        let Some(uri) = self.strip(req.uri()) else {
            return Box::pin(async { Ok(http::error(&Error::NotFound)) });
        };
        *req.uri_mut() = uri;
        Box::pin(async move { Ok(io.handle(req).await) })
    }
}
