//! The machine a run was taken on: CPU, kernel, load, node and the commit.

use std::process::Command;

use serde::Serialize;

use crate::repo;

/// Output of a command run in the repository, trimmed; empty on failure.
fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(repo::root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The short commit, with `+changes` when tracked files differ from it.
pub fn commit() -> String {
    let head = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{head}+changes")
    } else {
        head
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Read at the end of a run.
#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub nproc: String,
    pub kernel: String,
    pub date: String,
    pub commit: String,
    pub node: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn now() -> Machine {
        let cpu = sh("lscpu", &[])
            .lines()
            .find_map(|l| l.strip_prefix("Model name:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpu,
            nproc: sh("nproc", &["--all"]),
            kernel: sh("uname", &["-r"]),
            date: sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            commit: commit(),
            node: sh("node", &["--version"]),
            loadavg_end: loadavg(),
        }
    }
}
