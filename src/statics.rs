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
    let table: [(&[&str], &str, &'static [u8]); 7] = [
        (
            &["/", "/index.html"],
            "text/html; charset=utf-8",
            include_bytes!("../public/index.html"),
        ),
        (
            &["/public/client.js"],
            JS,
            include_bytes!("../public/client.js"),
        ),
        (&["/public/ssio.js"], JS, CLASSIC.as_bytes()),
        (
            &["/public/ssio.min.js"],
            JS,
            include_bytes!("../public/ssio.min.js"),
        ),
        (&["/public/ssio.mjs"], JS, ESM.as_bytes()),
        (
            &["/public/ssio.d.ts"],
            "application/typescript; charset=utf-8",
            include_bytes!("../public/ssio.d.ts"),
        ),
        (
            &["/public/style.css"],
            "text/css; charset=utf-8",
            include_bytes!("../public/style.css"),
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
const CLASSIC: &str = include_str!("../public/ssio.js");

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
pub(crate) const SERVER_SOURCE: &str = include_str!("app.rs");
