//! Where the repository is, which every path of the bench starts from (the
//! socket.io peer, the certificate, the reports). A module of its own that
//! uses no other, so that any module can use it without an import cycle.

use std::path::PathBuf;

/// The repository's root directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
