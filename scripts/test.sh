#!/usr/bin/env bash
# The project's test command: what the README says to run and what CI (.ci/run) runs, after fmt
# and clippy. Installs what the tests need itself, since CI starts from a clean checkout:
#   1. the independent Python IPLD implementation the interop test checks our blocks against,
#      and the nats-server (2.15, PyPI, into target/bench-tools/) the jetstream-sync smoke test runs;
#   2. the workspace's tests (unit, property, interop, real-process);
#   3. the fuzz smoke: every fuzz target for 25 s from its seeds (installs cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

pip install -r ipld-schema/tests/interop/requirements.txt
NATS_SERVER="$(bench/nats-server.sh)"
export NATS_SERVER
cargo test --workspace
scripts/fuzz-smoke.sh
