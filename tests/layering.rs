//! The folders of `src/` are layers that read top-down: every `use
//! crate::` (and every inline `crate::` path) from one layer points at a
//! lower layer, never up and never sideways, so no import cycle can form
//! between layers. Files inside one folder may use each other. A new folder
//! or root file must be given its place here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each layer's rank: a folder of `src/`, or a file at its root. A layer
/// may use only layers of a lower rank.
const ORDER: &[(&str, u32)] = &[
    ("app", 8),
    ("edge", 7),
    ("cluster", 6),
    ("transport", 5),
    ("api", 4),
    ("engine", 3),
    ("ops", 2),
    ("session", 1),
    ("config", 0),
    ("error", 0),
];

/// The most files the crate root may hold: the rest live in the layers.
const MAX_ROOT_FILES: usize = 8;

/// Crates that speak HTTP, which the engine must not name.
const HTTP_CRATES: &[&str] = &[
    "hyper",
    "hyper_util",
    "http_body",
    "http_body_util",
    "tokio_rustls",
];

/// Names re-exported at the crate root, and the layer each comes from.
const ROOT: &[(&str, &str)] = &[
    ("Io", "api"),
    ("Socket", "api"),
    ("Ack", "api"),
    ("Operator", "api"),
    ("Rejection", "api"),
    ("Config", "config"),
    ("Error", "error"),
    ("BackendError", "error"),
    ("Packet", "engine"),
    ("Cursor", "engine"),
    ("Target", "engine"),
    ("Sid", "session"),
    ("Handshake", "session"),
    ("Peer", "session"),
    ("Transport", "session"),
    ("DisconnectReason", "session"),
    ("Fanout", "engine"),
    ("Backend", "engine"),
    ("LocalBackend", "engine"),
    ("RedisBackend", "cluster"),
    ("ClusterSettings", "cluster"),
    ("ResponseBody", "transport"),
    ("Tls", "edge"),
    ("IoService", "edge"),
];

fn rank(layer: &str) -> Option<u32> {
    ORDER.iter().find(|(m, _)| *m == layer).map(|(_, r)| *r)
}

/// The layer a module path (`engine/fanout/cursor`) belongs to.
fn layer(module: &str) -> &str {
    module.split('/').next().unwrap()
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is, as named in `ORDER`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let name = rel.to_string_lossy().replace('\\', "/");
    name.strip_suffix("/mod")
        .map(str::to_string)
        .unwrap_or(name)
}

/// Every module a file refers to through `crate::` or `super::`, with the
/// line it does so on. Comments (doc links included) are not imports, and
/// neither is anything from `#[cfg(test)]` on: unit tests may reach across.
fn uses(module: &str, text: &str) -> Vec<(String, usize)> {
    let parent = module.rsplit_once('/').map(|(p, _)| p);
    let mut found = Vec::new();
    let mut in_use_group = false;
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `use crate::{a, b::c};`, possibly over several lines.
                in_use_group = !group.contains('}');
                for item in group.split([',', '}']) {
                    push_path(item.trim(), &mut found, n);
                }
            } else {
                push_path(after, &mut found, n);
            }
            rest = after;
        }
        if in_use_group && !code.contains("crate::{") {
            for item in code.split([',', '}']) {
                push_path(item.trim(), &mut found, n);
            }
            in_use_group = !code.contains('}');
        }
        if let (Some(parent), Some(i)) = (parent, code.find("super::")) {
            let after = &code[i + "super::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((format!("{parent}/{name}"), n + 1));
            }
        }
    }
    found
}

fn push_path(path: &str, found: &mut Vec<(String, usize)>, n: usize) {
    let first: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if first.is_empty() || first == "self" {
        return;
    }
    let module = ROOT
        .iter()
        .find(|(name, _)| *name == first)
        .map(|(_, m)| m.to_string())
        .unwrap_or(first);
    let module = match module.as_str() {
        // `crate::logging` and friends: modules re-exported at the root.
        "logging" | "memory" => "ops".to_string(),
        "server" => "edge".to_string(),
        _ => module,
    };
    found.push((module, n + 1));
}

/// Non-comment code before the first `#[cfg(test)]`: unit tests may reach
/// across layers and may speak HTTP.
fn code(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
}

fn modules() -> (PathBuf, Vec<(String, PathBuf)>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let modules = files
        .into_iter()
        .map(|f| (module_of(&src, &f), f))
        .collect();
    (src, modules)
}

#[test]
fn every_layer_imports_only_layers_below_it() {
    let (_, modules) = modules();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        if module == "lib" || module == "main" {
            continue;
        }
        let mine = layer(module);
        let Some(my_rank) = rank(mine) else {
            problems.push(format!("{module}: its layer {mine} is not in ORDER"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (used, line) in uses(module, &text) {
            let theirs = layer(&used).to_string();
            if theirs == mine {
                continue;
            }
            match rank(&theirs) {
                None => problems.push(format!("{module}:{line}: uses unknown module {used}")),
                Some(r) if r >= my_rank => problems.push(format!(
                    "{module}:{line}: uses {used}, whose layer {theirs} is not below {mine}"
                )),
                Some(_) => {
                    edges.entry(mine.to_string()).or_default().insert(theirs);
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
    // The chain the crate documents is really there.
    for (upper, lower) in [
        ("edge", "cluster"),
        ("edge", "transport"),
        ("cluster", "transport"),
        ("transport", "api"),
        ("api", "engine"),
        ("engine", "ops"),
        ("ops", "session"),
        ("session", "config"),
    ] {
        assert!(
            edges.get(upper).is_some_and(|e| e.contains(lower)),
            "{upper} no longer uses {lower}: update ORDER and the crate's layer essay"
        );
    }
}

#[test]
fn nothing_under_the_engine_speaks_http() {
    let (_, modules) = modules();
    let mut problems = Vec::new();
    for (module, file) in modules.iter().filter(|(m, _)| layer(m) == "engine") {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in code(&text).enumerate() {
            for krate in HTTP_CRATES {
                let named = line.match_indices(krate).any(|(i, _)| {
                    let before = line[..i].chars().next_back();
                    let after = &line[i + krate.len()..];
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                        && after.starts_with("::")
                });
                if named {
                    problems.push(format!("{module}:{}: names {krate}", n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the engine speaks HTTP:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_crate_root_holds_at_most_eight_files() {
    let (src, _) = modules();
    let root: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        root.len() <= MAX_ROOT_FILES,
        "{} files at the crate root, at most {MAX_ROOT_FILES}: {root:?}",
        root.len()
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let text = "use crate::api::io::Io;\nuse crate::{engine::hub::Hub,\n    config};\n// use crate::edge::server;\nlet _ = crate::Io::new;\n";
    let found: Vec<String> = uses("engine/fanout/mod", text)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(found, ["api", "engine", "config", "api"]);
    let sup: Vec<String> = uses("transport/sse_raw", "use super::sse::{self, SseBody};")
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(sup, ["transport/sse"]);
}
