#!/usr/bin/env bash
# Installs what the browser tests need (Debian's Chromium, nginx and
# redis-server, the npm packages, a release build of ssio) and runs them.
# Safe to run again; quiet unless something fails. Run as root on Debian.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

(cd "$here" && npm ci --silent --no-audit --no-fund)
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example features_server)

cd "$root"
exec node --test --test-concurrency=1 tests/browser/*.test.mjs
