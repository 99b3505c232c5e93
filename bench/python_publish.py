#!/usr/bin/env python3
"""Publishing from Python: a loop of Client.publish (one HTTP round trip per event) against
Client.publish_many (one publish stream, many events awaiting acknowledgement), on the same node
in the same run, rounds interleaved. Every event is acknowledged (durable) in both.

    python3 bench/python_publish.py [--events N] [--rounds R] [--api URL]

Without --api it starts an embedded node (tidings.Node) on a temporary data dir. Needs the
binding installed (pip install ./bindings/python). Prints events/s per round, the medians and
the ratio of medians."""

import argparse
import statistics
import time

import tidings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000, help="events per measurement (5000)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--api", help="a running node's API URL (default: an embedded node)")
    args = ap.parse_args()
    if args.events < 1 or args.rounds < 1:
        ap.error("--events and --rounds must be at least 1")

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
                topic = f"/bench/python/r{r}w{k}"
                t0 = time.perf_counter()
                got = publish(topic, bodies)
                took = time.perf_counter() - t0
                assert len(got) == args.events and got[-1].seq == args.events
                rates[name].append(args.events / took)
                print(f"round {r + 1}: {name}: {args.events / took:,.0f} events/s", flush=True)
    finally:
        if node is not None:
            node.close()
    base = statistics.median(rates["publish, one by one"])
    print(f"\nmedians over {args.rounds} rounds of {args.events} events:")
    for name, rs in rates.items():
        m = statistics.median(rs)
        print(f"  {name}: {m:,.0f} events/s ({m / base:.1f}x one by one)")


if __name__ == "__main__":
    main()
