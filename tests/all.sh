#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what the tests need
# (quietly, and only when missing), then the Rust suites, then the browser
# suite. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
# The half-open tests need network namespaces; here that is a requirement.
export SSIO_REQUIRE_NETNS=1

echo "== Rust: unit, integration and doc tests"
cargo test --quiet --no-fail-fast 2>&1

echo "== Benchmarks compile"
cargo bench --no-run --quiet 2>&1

echo "== Browser tests (Chromium)"
bash tests/browser/run.sh
