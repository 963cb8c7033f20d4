//! Small builders for hyper responses and the one bounded body reader, so no
//! route builds headers or limits by hand.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::config::Config;
use crate::error::Error;
use crate::transport::head;

/// The body type of every ssio response: a fixed buffer or an endless SSE
/// stream, boxed so both fit one service signature.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    BoxBody::new(Full::new(bytes.into()))
}

pub(crate) fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut res = Response::new(BoxBody::new(Empty::new()));
    *res.status_mut() = status;
    res
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    json_body(status, full(body))
}

/// [`json`] for a body that is not one buffer (a poll answer's chain of
/// shared events).
pub(crate) fn json_body(status: StatusCode, body: ResponseBody) -> Response<ResponseBody> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    crate::transport::head::apply(
        &mut res,
        crate::transport::head::JSON
            .iter()
            .map(|&(n, v)| (n, v.into()))
            .collect(),
    );
    res
}

pub(crate) fn file(content_type: &'static str, bytes: &'static [u8]) -> Response<ResponseBody> {
    let mut res = Response::new(full(Bytes::from_static(bytes)));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

pub(crate) fn preflight() -> Response<ResponseBody> {
    let mut res = empty(StatusCode::NO_CONTENT);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}

/// The error's status, its head from [`head::error`] and its JSON body.
pub(crate) fn error(e: &Error) -> Response<ResponseBody> {
    let mut res = Response::new(full(e.body()));
    *res.status_mut() = e.status();
    head::apply(&mut res, head::error(e));
    res
}

/// A JSON response whose head goes now and whose body is whatever `body`
/// resolves to later (an acknowledgement still to come).
pub(crate) fn deferred_json<F>(body: F) -> Response<ResponseBody>
where
    F: std::future::Future<Output = Bytes> + Send + Sync + 'static,
{
    json_body(StatusCode::OK, BoxBody::new(Deferred(Some(Box::pin(body)))))
}

type DeferredFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Bytes> + Send + Sync>>;

/// A body of one frame that is not ready yet.
struct Deferred(Option<DeferredFuture>);

impl http_body::Body for Deferred {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let Some(fut) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(bytes) => {
                self.0 = None;
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// Reads a request body up to `--max-payload`, within `--body-timeout`.
pub(crate) async fn read_body<B>(config: &Config, req: Request<B>) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_body_within(config, req, config.max_payload).await
}

/// Reads a request body up to `limit` bytes, within `--body-timeout`.
pub(crate) async fn read_body_within<B>(
    config: &Config,
    req: Request<B>,
    limit: usize,
) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(config.body_timeout(), body.collect()).await {
        Err(_) => Err(Error::BodyTimeout),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Error::PayloadTooLarge(limit)),
        Ok(Err(_)) => Err(Error::BodyRead),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
