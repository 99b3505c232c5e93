#!/usr/bin/env bash
# tidings beside nats-server (core and JetStream), mosquitto (QoS 0 and QoS 1) and rust-libp2p
# gossipsub, in one run on this machine. Installs nats-server and mosquitto from Debian's packages
# if they are missing, builds tidings and the driver, and runs it: it starts every server itself
# on free loopback ports (configs in bench/conf/) and writes
#   bench/results/compare-<date>.jsonl   one JSON line per (system, scenario, run)
#   bench/RESULTS.md, bench/results/*.svg   medians of the runs, generated from that file
# Arguments go to the driver: `bench/compare.sh --quick` is a smoke test (1 run, 1 s each, written
# under /tmp); `bench/compare.sh --help` lists the options. Takes ≈16 minutes with the defaults on a 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  # Where systemd runs, the package also starts a mosquitto service on port 1883; the driver
  # runs its own servers on free ports, so that one is left alone.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# The driver builds the release `tidings` binary itself (into the same target dir) before it
# measures anything.
exec cargo run --release -p tidings-bench --bin compare -- "$@"
