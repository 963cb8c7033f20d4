//! Small builders for hyper responses and the one bounded body reader, so no
//! route builds headers or limits by hand.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::config::Config;
use crate::error::Error;
use crate::head;
use crate::statics::StaticFile;

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
    crate::head::apply(
        &mut res,
        crate::head::JSON
            .iter()
            .map(|&(n, v)| (n, v.into()))
            .collect(),
    );
    res
}

/// An embedded file: its gzipped copy when the request accepts gzip and
/// there is one, else its bytes as they are. Both answers say they vary
/// on `Accept-Encoding`, so a cache never hands one to the wrong client.
pub(crate) fn static_file(
    file: &'static StaticFile,
    request: &HeaderMap,
) -> Response<ResponseBody> {
    let Some(gzip) = &file.gzip else {
        return self::file(file.content_type, file.bytes);
    };
    let gzipped = accepts_gzip(request);
    let mut res = self::file(
        file.content_type,
        if gzipped { gzip.as_slice() } else { file.bytes },
    );
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    res
}

/// The most `Accept-Encoding` bytes read. A browser sends a few dozen
/// (`gzip, deflate, br, zstd`); a longer list is no browser's, and gets
/// the plain bytes without being parsed.
const MAX_ACCEPT_ENCODING: usize = 256;

/// Whether `Accept-Encoding` allows gzip (RFC 9110, section 12.5.3): `gzip`
/// (or its old name `x-gzip`) with a weight above 0, or, if neither is
/// named, `*` with one. No header means the plain bytes: every client can
/// read those, and one that can decode gzip says so. So does anything this
/// cannot parse, since sending gzip to a client that did not ask for it
/// would break the page; so does a coding named twice with one weight 0.
pub(crate) fn accepts_gzip(request: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let mut read = 0;
    for value in request.get_all(header::ACCEPT_ENCODING) {
        read += value.len();
        let Ok(value) = value.to_str() else {
            return false;
        };
        if read > MAX_ACCEPT_ENCODING {
            return false;
        }
        // A list may have empty elements (`gzip, , br`); they mean nothing.
        for element in value.split(',').map(trim_ows).filter(|e| !e.is_empty()) {
            let Some((coding, weight)) = coding_weight(element) else {
                return false;
            };
            let seen =
                if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    &mut gzip
                } else if coding == "*" {
                    &mut any
                } else {
                    continue;
                };
            *seen = Some(seen.map_or(weight, |w: u16| w.min(weight)));
        }
    }
    gzip.or(any).is_some_and(|w| w > 0)
}

/// Optional whitespace around list elements and parameters.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// One list element, `coding [ OWS ";" OWS "q=" qvalue ]`, as the coding
/// and its weight in thousandths; `None` if malformed.
fn coding_weight(element: &str) -> Option<(&str, u16)> {
    let (coding, weight) = match element.split_once(';') {
        None => (element, None),
        Some((coding, param)) => (trim_ows(coding), Some(trim_ows(param))),
    };
    if coding.is_empty() || !coding.bytes().all(is_tchar) {
        return None;
    }
    let Some(weight) = weight else {
        return Some((coding, 1000));
    };
    let (name, value) = weight.split_once('=')?;
    if !name.eq_ignore_ascii_case("q") {
        return None;
    }
    Some((coding, qvalue(value)?))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A token character (RFC 9110, section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_chosen_only_when_the_header_allows_it() {
        for yes in [
            "gzip",
            "GZip",
            "x-gzip",
            "gzip, deflate, br, zstd",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "gzip ;  Q=0.001",
            "gzip;q=1",
            "gzip;q=1.",
            "gzip;q=1.000",
            "*",
            "*;q=0.5",
            "identity;q=0, *",
            ", ,gzip,\t,",
            "br, *;q=0, gzip",
        ] {
            assert!(accepts(&[yes]), "{yes:?}");
        }
        for no in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip; q=0, *",
            "*;q=0",
            "gzip;q=0, gzip",
            "gzip, gzip;q=0",
            // Malformed: the plain bytes, whatever else the list says.
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=",
            "gzip;q",
            "gzip;q = 1",
            "gzip;level=9",
            "gzip;q=1;x=y",
            "gzip;",
            "g zip",
            "gzip, br\"",
            "gzip, ;q=1",
            "gzip, @",
        ] {
            assert!(!accepts(&[no]), "{no:?}");
        }
        assert!(!accepts(&[]));
    }

    #[test]
    fn repeated_headers_are_one_list() {
        assert!(accepts(&["br", "gzip"]));
        assert!(!accepts(&["gzip", "gzip;q=0"]));
        assert!(!accepts(&["gzip", "gzip;q=oops"]));
    }

    #[test]
    fn an_oversized_header_gets_the_plain_bytes() {
        let padded = format!("{}gzip", "a, ".repeat(100));
        assert!(padded.len() > MAX_ACCEPT_ENCODING);
        assert!(!accepts(&[&padded]));
        let fits = format!("{}gzip", " ".repeat(MAX_ACCEPT_ENCODING - 4));
        assert!(accepts(&[&fits]));
        // The bound is on the whole list, over every header line.
        let half = "x".repeat(MAX_ACCEPT_ENCODING / 2);
        assert!(!accepts(&[&half, &half, "gzip"]));
    }

    #[test]
    fn a_header_that_is_not_text_gets_the_plain_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gzip, \xff").unwrap(),
        );
        assert!(!accepts_gzip(&headers));
    }

    proptest! {
        #[test]
        fn accepts_gzip_never_panics(values in proptest::collection::vec(any::<Vec<u8>>(), 0..4)) {
            let mut headers = HeaderMap::new();
            for v in values {
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    headers.append(header::ACCEPT_ENCODING, v);
                }
            }
            let _ = accepts_gzip(&headers);
        }

        #[test]
        fn a_weight_decides_between_gzip_and_the_plain_bytes(whole in 0u8..2, fraction in "[0-9]{0,3}") {
            let q = if fraction.is_empty() { whole.to_string() } else { format!("{whole}.{fraction}") };
            let thousandths = u32::from(whole) * 1000 + format!("{fraction:0<3}").parse::<u32>().unwrap();
            let valid = thousandths <= 1000;
            prop_assert_eq!(accepts(&[&format!("gzip;q={q}")]), valid && thousandths > 0);
        }
    }
}
