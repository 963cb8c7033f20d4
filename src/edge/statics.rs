//! The files under `public/`, embedded at build time.
//!
//! Serving from a fixed table rather than the filesystem makes path tricks
//! (`..`, encoded slashes, NUL bytes, symlinks) impossible by construction:
//! a path either names one of these entries exactly or is a 404. It also
//! makes the release binary self-contained.

/// One embedded file.
pub(crate) struct StaticFile {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// Looks up a request path.
pub(crate) fn lookup(path: &str) -> Option<StaticFile> {
    let (content_type, bytes): (&str, &[u8]) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../public/index.html"),
        ),
        "/public/client.js" => (JS, include_bytes!("../../public/client.js")),
        "/public/ssio.js" => (JS, CLASSIC.as_bytes()),
        "/public/ssio.mjs" => (JS, ESM.as_bytes()),
        "/public/ssio.d.ts" => (
            "application/typescript; charset=utf-8",
            include_bytes!("../../public/ssio.d.ts"),
        ),
        "/public/style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../public/style.css"),
        ),
        _ => return None,
    };
    Some(StaticFile {
        content_type,
        bytes,
    })
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
