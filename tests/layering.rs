//! The modules of `src/` form one chain that reads top-down: every
//! `use crate::` (and every inline `crate::` path) points at a module lower
//! in the order below, never up and never sideways, so no import cycle can
//! form. A new file must be given its place here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each module's rank; a module may use only modules of a lower rank.
const ORDER: &[(&str, u32)] = &[
    ("app", 12),
    ("server", 11),
    ("tower", 11),
    ("router", 10),
    ("http", 9),
    ("forward", 9),
    ("accept", 9),
    ("transport", 9),
    ("transport/sse_raw", 8),
    ("transport/poll_raw", 8),
    ("transport/sse", 7),
    ("probe", 7),
    ("transport/poll", 7),
    ("transport/mux", 7),
    ("socket", 6),
    ("hub", 5),
    ("cluster", 5),
    ("cluster/lease", 2),
    ("cluster/bus", 3),
    ("backend", 4),
    ("fanout", 3),
    ("mailbox", 2),
    ("head", 2),
    ("metrics", 2),
    ("logging", 1),
    ("limits", 2),
    ("rooms", 2),
    ("recovery", 2),
    ("tickets", 2),
    ("session", 1),
    ("ack", 0),
    ("middleware", 0),
    ("packet", 0),
    ("config", 0),
    ("error", 0),
    ("statics", 0),
    ("memory", 0),
    ("tls", 1),
];

/// Names re-exported at the crate root, and the module each comes from.
const ROOT: &[(&str, &str)] = &[
    ("Io", "socket"),
    ("Socket", "socket"),
    ("Config", "config"),
    ("Error", "error"),
    ("Packet", "packet"),
    ("Sid", "session"),
    ("Transport", "session"),
    ("DisconnectReason", "session"),
    ("Fanout", "fanout"),
    ("Backend", "backend"),
    ("RedisBackend", "cluster"),
    ("ClusterSettings", "cluster"),
];

fn rank(module: &str) -> Option<u32> {
    ORDER.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
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
    found.push((module, n + 1));
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(mine) = rank(&module) else {
            problems.push(format!("{module}: not placed in the layering order"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (used, line) in uses(&module, &text) {
            match rank(&used) {
                None => problems.push(format!("{module}:{line}: uses unknown module {used}")),
                Some(theirs) if theirs >= mine => problems.push(format!(
                    "{module}:{line}: uses {used}, which is not below it"
                )),
                Some(_) => edges.entry(module.clone()).or_default().push(used),
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
        ("server", "router"),
        ("router", "transport"),
        ("transport/sse", "socket"),
        ("socket", "hub"),
        ("hub", "backend"),
        ("backend", "fanout"),
        ("fanout", "mailbox"),
        ("mailbox", "session"),
        ("mailbox", "packet"),
    ] {
        assert!(
            edges
                .get(upper)
                .is_some_and(|e| e.iter().any(|m| m == lower)),
            "{upper} no longer uses {lower}: update ORDER and the module essay"
        );
    }
}

#[test]
fn the_checker_sees_an_upward_import() {
    let text =
        "use crate::socket::Io;\nuse crate::{hub::Hub,\n    config};\n// use crate::server;\n";
    let found: Vec<String> = uses("fanout", text).into_iter().map(|(m, _)| m).collect();
    assert_eq!(found, ["socket", "hub", "config"]);
    let sup: Vec<String> = uses("transport/sse_raw", "use super::sse::{self, SseBody};")
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(sup, ["transport/sse"]);
}
