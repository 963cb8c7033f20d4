//! Routes: the grader routes, static files, CORS preflight, 404 and 405,
//! `/stats`, and no path trick reaching a file outside `public/`.

use crate::support::*;
use regex::Regex;

#[tokio::test]
async fn server_source_route_serves_the_real_app_module() {
    let server = Server::start(fast_config()).await;
    let r = get(server.addr, "/_api/server.js").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(r.text(), include_str!("../../src/app.rs"));
    let re = Regex::new(r#"(?i)socket.on.*('|")disconnect('|")"#).unwrap();
    assert!(re.is_match(&r.text()));
}

#[tokio::test]
async fn client_script_route_serves_the_page_script() {
    let server = Server::start(fast_config()).await;
    let r = get(server.addr, "/public/client.js").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(r.text(), include_str!("../../public/client.js"));
    let re = Regex::new(r#"(?i)socket.on.*('|")user count('|")"#).unwrap();
    assert!(re.is_match(&r.text()));
    assert!(r.text().contains("const socket = io();"));

    let page = get(server.addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("/public/client.js"));
    for f in ["/public/ssio.js", "/public/style.css", "/public/ssio.d.ts"] {
        let r = get(server.addr, f).await;
        assert_eq!(r.status, 200, "{f}");
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*"),
            "{f}"
        );
    }
}

#[tokio::test]
async fn cors_preflight_gets_204() {
    let server = Server::start(fast_config()).await;
    for path in ["/_api/server.js", "/public/client.js", "/emit"] {
        let r = request(
            server.addr,
            "OPTIONS",
            path,
            &[
                ("Origin", "http://elsewhere.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            b"",
        )
        .await;
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert!(r
            .header("access-control-allow-methods")
            .unwrap()
            .contains("GET"));
        assert_eq!(
            r.header("access-control-allow-headers").as_deref(),
            Some("Content-Type")
        );
    }
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let server = Server::start(fast_config()).await;
    let r = get(server.addr, "/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.text(), r#"{"error":"not found"}"#);
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let server = Server::start(fast_config()).await;
    let cases = [
        ("POST", "/events", "GET, OPTIONS"),
        ("DELETE", "/poll", "GET, OPTIONS"),
        ("GET", "/emit", "POST, OPTIONS"),
        ("PUT", "/close", "POST, OPTIONS"),
        ("POST", "/public/client.js", "GET, HEAD, OPTIONS"),
        ("POST", "/_api/server.js", "GET, OPTIONS"),
    ];
    for (method, path, allow) in cases {
        let r = request(server.addr, method, path, &[], b"").await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{method} {path}");
        assert_eq!(r.text(), r#"{"error":"method not allowed"}"#);
    }
}

#[tokio::test]
async fn static_path_tricks_are_404() {
    let server = Server::start(fast_config()).await;
    let long = format!("/public/{}", "a/".repeat(3000));
    let tricks = [
        "/public/../Cargo.toml",
        "/public/%2e%2e/Cargo.toml",
        "/public/%2E%2E%2FCargo.toml",
        "/public/..%2fCargo.toml",
        "/public//client.js",
        "//public/client.js",
        "/public/client.js%00",
        "/public/client.js%00.png",
        "/public/./client.js",
        "/public/",
        "/public",
        "/src/app.rs",
        "/Cargo.toml",
        long.as_str(),
    ];
    for path in tricks {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.text(), r#"{"error":"not found"}"#, "{path}");
    }
    // A raw NUL in the request line is not HTTP at all.
    let r = request_raw(
        server.addr,
        b"GET /public/client.js\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    // Still healthy.
    assert_eq!(get(server.addr, "/public/client.js").await.status, 200);
}

#[tokio::test]
async fn stats_report_sessions_by_transport() {
    let server = Server::start(fast_config()).await;
    let _a = Sse::connect(server.addr).await;
    let _p = Poller::handshake(server.addr).await;
    let r = get(server.addr, "/stats").await;
    assert_eq!(
        r.text(),
        r#"{"sessions":2,"sse":1,"polling":1,"count":2,"away":0}"#
    );
}

#[tokio::test]
async fn the_client_is_served_as_a_classic_script_and_as_an_es_module_from_one_source() {
    let server = Server::start(fast_config()).await;
    let classic = include_str!("../../public/ssio.js");
    let r = get(server.addr, "/public/ssio.js").await;
    assert_eq!(r.text(), classic);
    let m = get(server.addr, "/public/ssio.mjs").await;
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    // The one fixed rewrite: the IIFE gets a private object instead of
    // `this`, and the module exports what it put there.
    let body = classic.strip_suffix("})(this);\n").unwrap();
    let expected = format!(
        "const ssio = {{}};\n{body}}})(ssio);\nexport const io = ssio.io;\nexport default io;\n"
    );
    assert_eq!(m.text(), expected);
}
