#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what the tests need
# (quietly, and only when missing), then the Rust suites, then the browser
# suite. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
# The half-open tests need network namespaces; here that is a requirement.
export SSIO_REQUIRE_NETNS=1
# The cluster tests need redis-server and nginx; here that is a requirement too.
export SSIO_REQUIRE_CLUSTER=1

# The half-open tests drive curl inside network namespaces made with ip.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The cluster tests start their own redis-server and nginx on loopback.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== Rust: unit, integration and doc tests"
cargo test --quiet --no-fail-fast 2>&1

echo "== API docs build without a warning"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet 2>&1

echo "== Benchmarks compile"
cargo bench --no-run --quiet 2>&1

echo "== Browser tests (Chromium)"
bash tests/browser/run.sh
