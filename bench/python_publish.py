#!/usr/bin/env python3
"""Publishing from Python: a loop of Client.publish (one HTTP round trip per event) against
Client.publish_many (one publish stream, many events awaiting acknowledgement), on the same node
in the same run, rounds interleaved. Every event is acknowledged (durable) in both.

    python3 bench/python_publish.py [--events N] [--rounds R] [--api URL] [--out DIR]

Without --api it starts an embedded node (tidings.Node) on a temporary data dir. Needs the
binding installed (pip install ./bindings/python). Prints events/s per round, the medians and
the ratio of medians, and saves them in DIR/results/python-publish-<date>.jsonl (DIR: bench/);
bindings/python/README.md quotes such a file."""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import time

import tidings

BENCH = pathlib.Path(__file__).resolve().parent


def machine() -> dict:
    """What the figures were measured on, as the Rust benches record it."""
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    load = open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "loadavg_at_start": load, "tidings_commit": commit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000, help="events per measurement (5000)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--api", help="a running node's API URL (default: an embedded node)")
    ap.add_argument("--out", type=pathlib.Path, default=BENCH,
                    help="results go to OUT/results/ (default: bench/)")
    args = ap.parse_args()
    if args.events < 1 or args.rounds < 1:
        ap.error("--events and --rounds must be at least 1")

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    header = {"bench": "python-publish-run", "date": started, "events": args.events,
              "rounds": args.rounds, "node": args.api or "embedded", **machine()}
    node = None if args.api else tidings.Node()
    client = tidings.Client(args.api) if args.api else node.client()
    ways = {
        "publish, one by one": lambda topic, bodies: [client.publish(topic, b) for b in bodies],
        "publish_many, in_flight=16": lambda topic, bodies: client.publish_many(topic, bodies, in_flight=16),
        "publish_many, in_flight=256": lambda topic, bodies: client.publish_many(topic, bodies),
    }
    rates = {name: [] for name in ways}
    try:
        for r in range(args.rounds):
            for k, (name, publish) in enumerate(ways.items()):
                bodies = [{"price": i % 100, "order": "buy", "n": i} for i in range(args.events)]
                # A topic per measurement, so every one starts a stream at seq 1.
                topic = f"/bench/python/{time.time_ns()}/r{r}w{k}"
                t0 = time.perf_counter()
                got = publish(topic, bodies)
                took = time.perf_counter() - t0
                if len(got) != args.events or got[-1].seq != args.events:
                    raise SystemExit(f"{name}: {len(got)} answers, last seq {got[-1].seq}")
                rates[name].append(args.events / took)
                print(f"round {r + 1}: {name}: {args.events / took:,.0f} events/s", flush=True)
    finally:
        if node is not None:
            node.close()
    base = statistics.median(rates["publish, one by one"])
    rows = []
    print(f"\nmedians over {args.rounds} rounds of {args.events} events:")
    for name, rs in rates.items():
        m = statistics.median(rs)
        rows.append({"bench": "python-publish", "way": name, "events_per_s": m,
                     "rounds_events_per_s": rs, "vs_one_by_one": m / base})
        print(f"  {name}: {m:,.0f} events/s ({m / base:.1f}x one by one)")
    results = args.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"python-publish-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.jsonl"
    with open(path, "w") as f:
        for line in [header, *rows]:
            f.write(json.dumps(line) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
