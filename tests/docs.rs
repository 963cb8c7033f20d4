//! The docs cannot drift from the code: the configuration page lists exactly
//! the flags the binary takes, with their variables and defaults; the
//! reliability page names only tests that exist; every page is in the book's
//! summary and every relative link resolves; the README stays a front door;
//! Rust examples are only where rustdoc compiles them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use regex::Regex;

/// The largest README, in bytes: past this it is a manual again.
const README_MAX_BYTES: u64 = 10 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every file under `dir` whose name ends with one of `exts`, recursively.
fn files_under(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "node_modules" && !name.starts_with('.') {
                files_under(&path, exts, out);
            }
        } else if exts.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

/// The cells of a Markdown table row, or `None` for any other line. A `\|`
/// inside a cell (as in `text\|json`) does not split it.
fn cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    Some(out.into_iter().map(|c| c.trim().to_string()).collect())
}

/// The contents of every backticked span in `text`.
fn code_spans(text: &str) -> Vec<String> {
    let re = Regex::new(r"`([^`]+)`").unwrap();
    re.captures_iter(text).map(|c| c[1].to_string()).collect()
}

/// The rows (with their 1-based line numbers) of every table in `page`
/// whose header row passes `header`.
fn table_rows(page: &str, header: impl Fn(&[String]) -> bool) -> Vec<(usize, Vec<String>)> {
    let lines: Vec<&str> = page.lines().collect();
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        match cells(lines[i]) {
            Some(head) if header(&head) => {
                // The header, then its `|---|` separator, then the rows.
                i += 2;
                while let Some(row) = lines.get(i).and_then(|l| cells(l)) {
                    rows.push((i + 1, row));
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    rows
}

/// One flag as the command line declares it or as the page documents it.
#[derive(Debug, PartialEq, Eq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
}

#[test]
fn the_configuration_page_and_the_command_line_list_the_same_flags() {
    let mut cli = BTreeMap::new();
    let mut command = ssio::Config::command();
    command.build();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let flag = Flag {
            env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
            default: (!defaults.is_empty()).then(|| defaults.join(",")),
        };
        cli.insert(format!("--{long}"), flag);
    }
    assert!(cli.len() > 30, "Config has only {} flags?", cli.len());

    let page = read("docs/configuration.md");
    let rows = table_rows(&page, |h| {
        h.len() >= 3 && h[..3] == ["flag", "env", "default"]
    });
    let mut problems = Vec::new();
    let mut documented: BTreeMap<String, (usize, Flag)> = BTreeMap::new();
    for (line, row) in rows {
        let at = format!("docs/configuration.md:{line}");
        if row.len() < 4 {
            problems.push(format!(
                "{at}: a row needs 4 cells: flag, env, default, meaning"
            ));
            continue;
        }
        // `--flag <value>`: the flag is the first word of the first span.
        let Some(flag) = code_spans(&row[0])
            .first()
            .and_then(|s| s.split_whitespace().next().map(str::to_string))
            .filter(|f| f.starts_with("--"))
        else {
            problems.push(format!("{at}: the first cell names no `--flag`"));
            continue;
        };
        // A cell without a backticked value documents no variable or no
        // default ("none", "the bound address").
        let doc = Flag {
            env: code_spans(&row[1]).into_iter().next(),
            default: code_spans(&row[2]).into_iter().next(),
        };
        if let Some((first, _)) = documented.get(&flag) {
            problems.push(format!(
                "{at}: {flag} has a second row (the first is on line {first})"
            ));
            continue;
        }
        documented.insert(flag, (line, doc));
    }
    for (name, want) in &cli {
        match documented.get(name) {
            None => problems.push(format!(
                "{name} (env {:?}, default {:?}) has no row in docs/configuration.md",
                want.env, want.default
            )),
            Some((line, got)) => {
                if got.env != want.env {
                    problems.push(format!(
                        "docs/configuration.md:{line}: {name}: the page says env {:?}, the command line {:?}",
                        got.env, want.env
                    ));
                }
                if got.default != want.default {
                    problems.push(format!(
                        "docs/configuration.md:{line}: {name}: the page says default {:?}, the command line {:?}",
                        got.default, want.default
                    ));
                }
            }
        }
    }
    for (name, (line, _)) in &documented {
        if !cli.contains_key(name) {
            problems.push(format!(
                "docs/configuration.md:{line}: {name} is not a flag of the command line"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_reliability_page_names_only_tests_that_exist() {
    // Every `fn` and every file name under tests/ and src/, wherever it
    // lives, so that a test may move between files without touching the
    // page.
    let mut sources = Vec::new();
    files_under(&root().join("tests"), &[".rs", ".mjs"], &mut sources);
    files_under(&root().join("src"), &[".rs"], &mut sources);
    let fn_re = Regex::new(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let mut fns = BTreeSet::new();
    let mut files = BTreeSet::new();
    for path in &sources {
        files.insert(path.file_name().unwrap().to_string_lossy().into_owned());
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(path).unwrap();
            fns.extend(fn_re.captures_iter(&text).map(|c| c[1].to_string()));
        }
    }

    // The citations are the backticked spans of the last cell of each row
    // of the guarantees table: a file (`count.rs`, `src/limits.rs`,
    // `tests/browser/tabs.test.mjs`) or a test function's name.
    let page = read("docs/reliability.md");
    let rows = table_rows(&page, |h| h.last().is_some_and(|c| c == "test"));
    let ident = Regex::new(r"^[a-z_][a-z0-9_]*$").unwrap();
    let mut cited = 0;
    let mut problems = Vec::new();
    for (line, row) in rows {
        for span in code_spans(row.last().unwrap()) {
            cited += 1;
            let at = format!("docs/reliability.md:{line}");
            if span.ends_with(".rs") || span.ends_with(".mjs") {
                let name = span.rsplit('/').next().unwrap();
                if !files.contains(name) {
                    problems.push(format!("{at}: no file {name} under tests/ or src/"));
                }
            } else if !ident.is_match(&span) {
                problems.push(format!(
                    "{at}: `{span}` is neither a test's full name nor a file"
                ));
            } else if !fns.contains(&span) {
                problems.push(format!("{at}: no `fn {span}` under tests/ or src/"));
            }
        }
    }
    assert!(
        cited > 50,
        "only {cited} citations found: is the table still there?"
    );
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Every link target in a Markdown page, outside code blocks and code spans.
fn link_targets(page: &str) -> Vec<(usize, String)> {
    let link = Regex::new(r#"\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)"#).unwrap();
    let span = Regex::new(r"`[^`]*`").unwrap();
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in page.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let line = span.replace_all(line, "");
        out.extend(link.captures_iter(&line).map(|c| (i + 1, c[1].to_string())));
    }
    out
}

#[test]
fn every_page_is_in_the_summary_and_every_relative_link_resolves() {
    let docs = root().join("docs");
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "SUMMARY.md")
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no pages in docs/");

    let mut problems = Vec::new();
    let summary: BTreeSet<String> = link_targets(&read("docs/SUMMARY.md"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for target in &summary {
        if !docs.join(target).is_file() {
            problems.push(format!(
                "docs/SUMMARY.md links {target}, which does not exist"
            ));
        }
    }
    for page in &pages {
        if !summary.contains(page) {
            problems.push(format!("docs/{page} is not listed in docs/SUMMARY.md"));
        }
    }

    let mut sources = vec!["README.md".to_string(), "benches/README.md".to_string()];
    sources.extend(pages.iter().map(|p| format!("docs/{p}")));
    for source in &sources {
        let dir = root().join(source).parent().unwrap().to_path_buf();
        for (line, target) in link_targets(&read(source)) {
            if target.starts_with('#')
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let path = target.split('#').next().unwrap();
            if !dir.join(path).exists() {
                problems.push(format!("{source}:{line}: {target} does not exist"));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn no_page_shows_rust_that_nothing_compiles() {
    // Rust examples live in the guide under src/guide/, where every block
    // is a doctest; a page of the book or a README is compiled by nothing,
    // so a Rust block there would only look checked.
    let mut sources = vec!["README.md".to_string(), "benches/README.md".to_string()];
    let mut pages = Vec::new();
    files_under(&root().join("docs"), &[".md"], &mut pages);
    sources.extend(pages.iter().map(|p| {
        p.strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }));
    let mut problems = Vec::new();
    for source in &sources {
        let mut fenced = false;
        for (i, line) in read(source).lines().enumerate() {
            let Some(info) = line.trim_start().strip_prefix("```") else {
                continue;
            };
            if !fenced {
                let lang = info.trim().split([',', ' ']).next().unwrap_or("");
                if lang == "rust" {
                    problems.push(format!(
                        "{source}:{}: a Rust block: move it into src/guide/ as a doctest",
                        i + 1
                    ));
                }
            }
            fenced = !fenced;
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_readme_stays_a_front_door() {
    let bytes = std::fs::metadata(root().join("README.md")).unwrap().len();
    assert!(
        bytes <= README_MAX_BYTES,
        "README.md is {bytes} bytes, over {README_MAX_BYTES}: move the detail into docs/"
    );
}
