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
            include_bytes!("../public/index.html"),
        ),
        "/public/client.js" => (JS, include_bytes!("../public/client.js")),
        "/public/ssio.js" => (JS, include_bytes!("../public/ssio.js")),
        "/public/ssio.d.ts" => (
            "application/typescript; charset=utf-8",
            include_bytes!("../public/ssio.d.ts"),
        ),
        "/public/style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../public/style.css"),
        ),
        _ => return None,
    };
    Some(StaticFile {
        content_type,
        bytes,
    })
}

/// The module holding the socket-style connection and disconnect handlers,
/// served at `/_api/server.js` so that what a reader sees is what runs.
pub(crate) const SERVER_SOURCE: &str = include_str!("app.rs");
