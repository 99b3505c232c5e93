"""Stock ticker: a seeded quote publisher on /stocks/{exchange}/{symbol}, a subscriber with the
seeds' filter, and beside it a subscribe-everything client that filters locally. At the end it
prints how many bytes each received per matching event.

    python examples/stock_ticker/ticker.py             # 2,000 quotes on a node inside this process
    python examples/stock_ticker/ticker.py --short     # 300 quotes
    python examples/stock_ticker/ticker.py --api http://127.0.0.1:7700   # a running node instead
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading

import tidings

# The seeds' JSON filter form: exchange, order = buy, number > 50, price < 10.
FILTER = ('{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", '
          '"number": ">50", "price": "<10"}')
EXCHANGES = [("Euronext Lisboa", "euronext"), ("NYSE", "nyse"), ("XETRA", "xetra")]
SYMBOLS = ["CTT", "EDP", "GALP", "NOS", "SON", "JMT"]
# The last quote: matches the filter, tells both subscribers the run is over (not counted).
LAST = {"exchange": "Euronext Lisboa", "order": "buy", "number": "51", "price": 0.01, "last": True}


def quotes(seed: int, n: int):
    rng = random.Random(seed)
    for _ in range(n):
        exchange, slug = rng.choice(EXCHANGES)
        yield f"/stocks/{slug}/{rng.choice(SYMBOLS)}", {
            "exchange": exchange,
            "order": rng.choice(["buy", "sell"]),
            "number": str(rng.randint(1, 200)),  # the seeds send numbers as strings
            "price": round(rng.uniform(1, 20), 2),
        }


def collect(sub: tidings.Subscription, keep, out: list, verbose: bool) -> None:
    """Reads `sub` until the last quote, keeping the events `keep` accepts."""
    for ev in sub:
        if ev.body.get("last"):
            return
        if keep(ev):
            out.append(ev)
            if verbose:
                b = ev.body
                print(f"MATCH {ev.topic:<22} {b['order']} {b['number']:>3} @ {b['price']:5.2f}"
                      f"  seq {ev.seq}  {ev.cid[:16]}… verified")


def run(client: tidings.Client, n: int, seed: int, verbose: bool) -> int:
    local = tidings.Filter(FILTER)
    matched: list = []
    everything: list = []
    with client.subscribe(FILTER) as filtered, client.subscribe("/stocks/**") as firehose:
        readers = [
            threading.Thread(target=collect, args=(filtered, lambda e: True, matched, verbose)),
            threading.Thread(target=collect,
                             args=(firehose, lambda e: local.matches(e.topic, e.body), everything, False)),
        ]
        for t in readers:
            t.start()
        for topic, body in quotes(seed, n):
            client.publish(topic, body)
        client.publish("/stocks/euronext/CTT", LAST)
        for t in readers:
            t.join()
        filtered_bytes, firehose_bytes = filtered.received_bytes, firehose.received_bytes
    if [e.cid for e in matched] != [e.cid for e in everything]:
        print("error: the filtered subscription and the local filter disagree", file=sys.stderr)
        return 1
    m = max(len(matched), 1)
    print(f"\n{n} quotes published, {len(matched)} matched {FILTER}")
    print(f"bytes received per matching event (last quote included in the totals):")
    print(f"  filtered subscription:                {filtered_bytes / m:10,.0f} B")
    print(f"  subscribe-everything + local filter:  {firehose_bytes / m:10,.0f} B"
          f"  ({firehose_bytes / max(filtered_bytes, 1):.1f}x)")
    print(f"stock_ticker: quotes={n} matches={len(matched)} filtered_bytes={filtered_bytes} "
          f"everything_bytes={firehose_bytes}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quotes", type=int, default=2000, help="how many quotes to publish")
    p.add_argument("--seed", type=int, default=1, help="seed of the quote generator")
    p.add_argument("--short", action="store_true", help="300 quotes (the CI run)")
    p.add_argument("--api", default=os.environ.get("TIDINGS_API"),
                   help="a running node's API (default: a node inside this process)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args()
    n = 300 if args.short else args.quotes
    if args.api:
        return run(tidings.Client(args.api), n, args.seed, not args.quiet)
    with tidings.Node() as node:
        return run(node.client(), n, args.seed, not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
