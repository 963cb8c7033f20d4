//! The files under `public/`, embedded at build time.
//!
//! Serving from a fixed table rather than the filesystem makes path tricks
//! (`..`, encoded slashes, NUL bytes, symlinks) impossible by construction:
//! a path either names one of these entries exactly or is a 404. It also
//! makes the release binary self-contained.
//!
//! Each file also keeps a gzipped copy, made once per process, for the
//! clients that accept it: the page's scripts are most of what a first
//! visit downloads, and they compress to a fraction of their size.

use hyper::header::{HeaderMap, HeaderValue};
use hyper::{header, Response};

use crate::transport::http::{self, ResponseBody};

/// One embedded file.
pub(crate) struct StaticFile {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: &'static [u8],
    /// `bytes` gzipped, for a client that accepts gzip; `None` where that
    /// would not be smaller.
    pub(crate) gzip: Option<Vec<u8>>,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Looks up a request path.
pub(crate) fn lookup(path: &str) -> Option<&'static StaticFile> {
    FILES
        .iter()
        .find(|(paths, _)| paths.contains(&path))
        .map(|(_, file)| file)
}

/// Every file with the paths that name it. Built on first use, so each
/// file is compressed once per process and never per request.
static FILES: std::sync::LazyLock<Vec<(&[&str], StaticFile)>> = std::sync::LazyLock::new(|| {
    let table: [(&[&str], &str, &'static [u8]); 10] = [
        (
            &["/", "/index.html"],
            "text/html; charset=utf-8",
            include_bytes!("../../public/index.html"),
        ),
        (
            &["/public/client.js"],
            JS,
            include_bytes!("../../public/client.js"),
        ),
        (&["/public/ssio.js"], JS, CLASSIC.as_bytes()),
        (
            &["/public/ssio.min.js"],
            JS,
            include_bytes!("../../public/ssio.min.js"),
        ),
        (&["/public/ssio.mjs"], JS, ESM.as_bytes()),
        (
            &["/public/ssio.d.ts"],
            "application/typescript; charset=utf-8",
            include_bytes!("../../public/ssio.d.ts"),
        ),
        (
            &["/public/style.css"],
            "text/css; charset=utf-8",
            include_bytes!("../../public/style.css"),
        ),
        (
            &["/admin"],
            "text/html; charset=utf-8",
            include_bytes!("../../public/admin.html"),
        ),
        (
            &["/public/admin.js"],
            JS,
            include_bytes!("../../public/admin.js"),
        ),
        (
            &["/public/admin.css"],
            "text/css; charset=utf-8",
            include_bytes!("../../public/admin.css"),
        ),
    ];
    table
        .into_iter()
        .map(|(paths, content_type, bytes)| {
            let gzip = Some(gzip(bytes)).filter(|g| g.len() < bytes.len());
            (
                paths,
                StaticFile {
                    content_type,
                    bytes,
                    gzip,
                },
            )
        })
        .collect()
});

/// `bytes` as a gzip member. The header's time is 0 and names no system,
/// so the same file always compresses to the same bytes.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// The browser client as a classic script: defines the global `io`.
const CLASSIC: &str = include_str!("../../public/ssio.js");

/// The same client as an ES module (`import { io } from '/public/ssio.mjs'`),
/// made from [`CLASSIC`] by one fixed rewrite so the two cannot drift.
static ESM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| esm(CLASSIC));

/// The classic script's last line hands the IIFE `this` (the window) to put
/// `io` on; the module hands it a private object instead and exports `io`.
fn esm(classic: &str) -> String {
    const TAIL: &str = "})(this);\n";
    let body = classic
        .strip_suffix(TAIL)
        .expect("public/ssio.js ends with `})(this);`");
    format!(
        "const ssio = {{}};\n{body}}})(ssio);\nexport const io = ssio.io;\nexport default io;\n"
    )
}

/// The module holding the socket-style connection and disconnect handlers,
/// served at `/_api/server.js` so that what a reader sees is what runs.
pub(crate) const SERVER_SOURCE: &str = include_str!("../app.rs");

/// An embedded file: its gzipped copy when the request accepts gzip and
/// there is one, else its bytes as they are. Both answers say they vary
/// on `Accept-Encoding`, so a cache never hands one to the wrong client.
pub(crate) fn static_file(
    file: &'static StaticFile,
    request: &HeaderMap,
) -> Response<ResponseBody> {
    let Some(gzip) = &file.gzip else {
        return http::file(file.content_type, file.bytes);
    };
    let gzipped = accepts_gzip(request);
    let mut res = http::file(
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

    #[test]
    fn static_lookup_corpus() {
        for p in [
            "/",
            "/index.html",
            "/public/client.js",
            "/public/ssio.js",
            "/public/ssio.min.js",
            "/public/ssio.d.ts",
            "/public/ssio.mjs",
            "/public/style.css",
            "/admin",
            "/public/admin.js",
            "/public/admin.css",
        ] {
            assert!(lookup(p).is_some(), "{p}");
        }
        for p in [
            "",
            "/public/",
            "/public/../src/app.rs",
            "/PUBLIC/client.js",
            "/public/client.js/",
            "/public/client.js?x",
            "/admin/",
            "/admin.html",
            "/public/admin.html",
        ] {
            assert!(lookup(p).is_none(), "{p}");
        }
    }

    proptest! {
        #[test]
        fn static_lookup_serves_only_the_table(path in "/[./%a-z0-9A-Z]{0,40}") {
            if lookup(&path).is_some() {
                prop_assert!(["/", "/index.html", "/public/client.js", "/public/ssio.js", "/public/ssio.min.js", "/public/ssio.mjs", "/public/ssio.d.ts", "/public/style.css", "/admin", "/public/admin.js", "/public/admin.css"].contains(&path.as_str()));
            }
        }
    }
}
