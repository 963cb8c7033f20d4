//! Static files on the wire: the plain bytes or their gzipped copy, chosen
//! by `Accept-Encoding`, with exact heads; HEAD says the same with no body;
//! the page's minified client is the committed file and stays small.

use std::io::Read;
use std::net::SocketAddr;

use crate::support::*;
use ssio::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const MIN_JS: &[u8] = include_bytes!("../../public/ssio.min.js");

/// The budget for the page's client on the wire, gzipped.
const CLIENT_BUDGET: usize = 5000;

/// Every file in the table with the bytes it must serve.
fn files() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    const JS: &str = "text/javascript; charset=utf-8";
    let classic = include_str!("../../public/ssio.js");
    let body = classic.strip_suffix("})(this);\n").unwrap();
    let esm = format!(
        "const ssio = {{}};\n{body}}})(ssio);\nexport const io = ssio.io;\nexport default io;\n"
    );
    let html: &[u8] = include_bytes!("../../public/index.html");
    vec![
        ("/", "text/html; charset=utf-8", html.to_vec()),
        ("/index.html", "text/html; charset=utf-8", html.to_vec()),
        (
            "/public/client.js",
            JS,
            include_bytes!("../../public/client.js").to_vec(),
        ),
        ("/public/ssio.js", JS, classic.as_bytes().to_vec()),
        ("/public/ssio.min.js", JS, MIN_JS.to_vec()),
        ("/public/ssio.mjs", JS, esm.into_bytes()),
        (
            "/public/ssio.d.ts",
            "application/typescript; charset=utf-8",
            include_bytes!("../../public/ssio.d.ts").to_vec(),
        ),
        (
            "/public/style.css",
            "text/css; charset=utf-8",
            include_bytes!("../../public/style.css").to_vec(),
        ),
    ]
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// The response's header lines but `date`, lowercased names, in order.
fn head_lines(head: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().to_ascii_lowercase();
            (k != "date").then(|| format!("{k}: {}", v.trim()))
        })
        .collect()
}

/// What a static file's response head must be, `date` aside, to a
/// request that said `Connection: close`.
fn expected_head(content_type: &str, len: usize, gzip: bool) -> Vec<String> {
    let mut head = vec![
        "connection: close".to_string(),
        format!("content-type: {content_type}"),
        "cache-control: no-cache".to_string(),
        "x-content-type-options: nosniff".to_string(),
        "vary: Accept-Encoding".to_string(),
    ];
    if gzip {
        head.push("content-encoding: gzip".to_string());
    }
    head.push("access-control-allow-origin: *".to_string());
    head.push(format!("content-length: {len}"));
    head.sort();
    head
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

async fn get_with(addr: SocketAddr, path: &str, accept_encoding: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = accept_encoding
        .map(|v| ("Accept-Encoding", v))
        .into_iter()
        .collect();
    request(addr, "GET", path, &headers, b"").await
}

/// Sends `raw` on a fresh connection that the request closes and returns
/// everything that came back, split into the head and what followed it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, Vec<u8>) {
    let got = timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    })
    .await
    .expect("no complete response in time");
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8(got[..end + 2].to_vec()).unwrap();
    (head, got[end + 4..].to_vec())
}

#[tokio::test]
async fn without_gzip_in_accept_encoding_every_file_is_its_exact_bytes() {
    let server = Server::start(fast_config()).await;
    for (path, content_type, bytes) in files() {
        let r = get_with(server.addr, path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, bytes, "{path}");
        assert_eq!(
            sorted(head_lines(&r.head)),
            expected_head(content_type, bytes.len(), false),
            "{path}"
        );
    }
}

#[tokio::test]
async fn with_gzip_accepted_every_file_is_gzip_that_decodes_to_its_exact_bytes() {
    let server = Server::start(fast_config()).await;
    for (path, content_type, bytes) in files() {
        let r = get_with(server.addr, path, Some("gzip, deflate, br, zstd")).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.len() < bytes.len(), "{path}: gzip is smaller");
        assert_eq!(gunzip(&r.body), bytes, "{path}");
        assert_eq!(
            sorted(head_lines(&r.head)),
            expected_head(content_type, r.body.len(), true),
            "{path}"
        );
        // Compressed once: every request gets the very same bytes.
        let again = get_with(server.addr, path, Some("gzip")).await;
        assert_eq!(again.body, r.body, "{path}");
    }
}

#[tokio::test]
async fn accept_encoding_is_parsed_not_searched() {
    let server = Server::start(fast_config()).await;
    let gzip_len = get_with(server.addr, "/public/ssio.min.js", Some("gzip"))
        .await
        .body
        .len();
    for (value, gzip) in [
        ("GZIP", true),
        ("x-gzip", true),
        ("*", true),
        ("br;q=1.0, gzip;q=0.5", true),
        (" , gzip ; q=0.001 ,", true),
        ("identity", false),
        ("gzip;q=0", false),
        ("gzip;Q=0.000", false),
        ("*;q=0", false),
        ("br, *;q=0.5, gzip;q=0", false),
        ("", false),
        ("deflate, br", false),
        // Malformed or oversized: the plain bytes, never an error.
        ("gzip;q=2", false),
        ("gzip;q=yes", false),
        ("gzip;q", false),
        ("gzip;level=9", false),
        ("gzip, \"br\"", false),
        ("gzip, ;;;", false),
        (&format!("{}gzip", "deflate, ".repeat(40)), false),
    ] {
        let r = get_with(server.addr, "/public/ssio.min.js", Some(value)).await;
        assert_eq!(r.status, 200, "{value:?}");
        let (len, body) = if gzip {
            (gzip_len, gunzip(&r.body))
        } else {
            (MIN_JS.len(), r.body.clone())
        };
        assert_eq!(body, MIN_JS, "{value:?}");
        assert_eq!(
            sorted(head_lines(&r.head)),
            expected_head("text/javascript; charset=utf-8", len, gzip),
            "{value:?}"
        );
    }
    // No header at all, and bytes that are not text.
    let r = get_with(server.addr, "/public/ssio.min.js", None).await;
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (MIN_JS, None)
    );
    let mut raw = b"GET /public/ssio.min.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    raw.extend_from_slice(b"Accept-Encoding: gzip, \xff\xfe\r\n\r\n");
    let r = request_raw(server.addr, &raw).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.body.as_slice(), r.header("content-encoding")),
        (MIN_JS, None)
    );
    // Two header lines are one list.
    let raw = b"GET /public/ssio.min.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
        Accept-Encoding: br\r\nAccept-Encoding: gzip;q=0.5\r\n\r\n";
    let r = request_raw(server.addr, raw).await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(gunzip(&r.body), MIN_JS);
}

#[tokio::test]
async fn head_gives_the_same_head_as_get_and_no_body() {
    let server = Server::start(fast_config()).await;
    for (path, content_type, bytes) in files() {
        for accept in [None, Some("gzip")] {
            let get = get_with(server.addr, path, accept).await;
            let extra = accept.map_or(String::new(), |v| format!("Accept-Encoding: {v}\r\n"));
            let raw =
                format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
            let (head, after) = exchange(server.addr, raw.as_bytes()).await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
            assert_eq!(after, b"", "{path} {accept:?}: HEAD has no body");
            assert_eq!(
                sorted(head_lines(&head)),
                sorted(head_lines(&get.head)),
                "{path} {accept:?}"
            );
            let len = if accept.is_some() {
                get.body.len()
            } else {
                bytes.len()
            };
            assert_eq!(
                sorted(head_lines(&head)),
                expected_head(content_type, len, accept.is_some()),
                "{path} {accept:?}"
            );
        }
    }
}

#[tokio::test]
async fn with_an_origin_allow_list_a_static_file_varies_on_both_headers() {
    let server = Server::start(Config {
        cors_origins: vec!["https://app.example".into()],
        ..fast_config()
    })
    .await;
    let headers = [
        ("Origin", "https://app.example"),
        ("Accept-Encoding", "gzip"),
    ];
    let r = request(server.addr, "GET", "/public/style.css", &headers, b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding, Origin"));
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(gunzip(&r.body), include_bytes!("../../public/style.css"));
    // A route with no gzip copy still varies on Origin alone.
    let r = request(server.addr, "GET", "/stats", &headers, b"").await;
    assert_eq!(r.header("vary").as_deref(), Some("Origin"));
}

#[tokio::test]
async fn the_page_loads_the_minified_client_the_repository_holds() {
    let server = Server::start(fast_config()).await;
    let page = get(server.addr, "/").await;
    assert!(page
        .text()
        .contains("<script src=\"/public/ssio.min.js\"></script>"));
    assert!(!page.text().contains("/public/ssio.js"));
    let r = get(server.addr, "/public/ssio.min.js").await;
    assert_eq!(r.body, MIN_JS);
    assert_eq!(std::fs::read("public/ssio.min.js").unwrap(), r.body);
    // The readable source stays at its own route.
    let source = get(server.addr, "/public/ssio.js").await;
    assert_eq!(source.text(), include_str!("../../public/ssio.js"));
}

#[tokio::test]
async fn the_minified_client_costs_at_most_5000_bytes_on_the_wire_gzipped() {
    let server = Server::start(fast_config()).await;
    let r = get_with(
        server.addr,
        "/public/ssio.min.js",
        Some("gzip, deflate, br, zstd"),
    )
    .await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(len, r.body.len());
    assert!(
        len <= CLIENT_BUDGET,
        "{len} bytes gzipped, budget {CLIENT_BUDGET}"
    );
    println!(
        "/public/ssio.min.js: {} bytes, {len} gzipped on the wire",
        MIN_JS.len()
    );
}
