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
# examples/publish.py is run by tests/examples.rs.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
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

echo "== Rust without the default features (tls, redis): build and unit tests"
# The rest of the crate must stand without TLS and Redis; only the unit
# tests run, since the integration tests do not depend on either.
cargo test --quiet --no-default-features --lib --bins 2>&1

echo "== Crate package"
# What `cargo publish` would upload: the manifest must be valid, and every
# file the sources embed (public/, the Lua scripts) must be in the package,
# or the published crate would not build.
cargo package --quiet --allow-dirty --no-verify 2>&1
packaged=$(cargo package --quiet --allow-dirty --list)
grep -roE 'include_(str|bytes)!\("[^"]+"\)' src | while IFS=: read -r file call; do
  embedded=${call#*\(\"}
  embedded=$(realpath -m --relative-to=. "$(dirname "$file")/${embedded%\"\)}")
  if ! grep -qxF "$embedded" <<<"$packaged"; then
    echo "$file embeds $embedded, which the package leaves out (Cargo.toml include)" >&2
    exit 1
  fi
done

echo "== Benchmarks compile"
cargo bench --no-run --quiet 2>&1

echo "== Browser tests (Chromium)"
bash tests/browser/run.sh
