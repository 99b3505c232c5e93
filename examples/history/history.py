"""Missing history, three ways:

1. a durable subscriber goes away while events are published, comes back with the same name and
   gets exactly what it missed, in order, then live events;
2. a new node fetches the whole stream from the network, every block verified (CID and
   signature), with a progress bar, and the client verifies each event again as it reads it;
3. the stream is exported as a CAR v1 file (any IPFS tool reads it), checked block by block.

    python examples/history/history.py            # 2,000 events
    python examples/history/history.py --short    # 200 events
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import tidings

TOPIC = "/sensors/greenhouse/temp"
FILTER = "/sensors/** where celsius > 25"


def reading(i: int) -> dict:
    # A deterministic day of temperatures: about a third of them over 25 °C.
    return {"i": i, "celsius": round(18 + 12 * ((i * 37) % 100) / 100, 1)}


def bar(p: dict, started: float) -> None:
    total = max(p.get("estimate") or 0, p["blocks"], 1)
    done = int(30 * p["blocks"] / total)
    rate = p["blocks"] / max(time.monotonic() - started, 1e-3)
    print(f"\r  [{'#' * done}{'.' * (30 - done)}] {p['blocks']}/{total} blocks, "
          f"{p['bytes'] / 1e6:.1f} MB, {rate:,.0f} blocks/s", end="", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--short", action="store_true", help="200 events (the CI run)")
    p.add_argument("--out", type=pathlib.Path, help="where to write the CAR (default: a temp dir)")
    args = p.parse_args()
    n = 200 if args.short else args.events
    away = n // 2

    with tidings.Node() as broker, tempfile.TemporaryDirectory() as tmp:
        client = broker.client()

        print(f"1. durable subscriber 'greenhouse' on {FILTER!r}")
        with client.subscribe(FILTER, durable="greenhouse") as sub:
            first = client.publish(TOPIC, reading(0) | {"celsius": 30.0}).cid
            ev = sub.next(timeout=30)
            assert ev is not None and ev.cid == first
            sub.ack(ev)
            print(f"   live: seq {ev.seq} {ev.body}, acknowledged; going away")
        # Many in flight on one publish stream, each acknowledged (durable) as publish() is.
        published = client.publish_many(TOPIC, [reading(i) for i in range(1, away + 1)])
        missed = [x.cid for x, i in zip(published, range(1, away + 1)) if reading(i)["celsius"] > 25]
        print(f"   while away: {away} events published, {len(missed)} match")
        with client.subscribe(FILTER, durable="greenhouse") as sub:
            got = []
            while len(got) < len(missed):
                ev = sub.next(timeout=30)
                if ev is None:
                    print("error: the backlog stopped short", file=sys.stderr)
                    return 1
                got.append(ev)
                sub.ack(ev)
            if [e.cid for e in got] != missed or [e.seq for e in got] != sorted(e.seq for e in got):
                print("error: the backlog is not exactly what was missed, in order", file=sys.stderr)
                return 1
            live = client.publish(TOPIC, {"i": -1, "celsius": 40.0}).cid
            ev = sub.next(timeout=30)
            if ev is None or ev.cid != live:
                print("error: no live event after the backlog", file=sys.stderr)
                return 1
            sub.ack(ev)
            print(f"   back: {len(got)} missed events in order (seq {got[0].seq}..{got[-1].seq}), "
                  f"then live seq {ev.seq}")
        client.delete_durable("greenhouse")
        rest = [p.cid for p in client.publish_many(TOPIC, [reading(i) for i in range(away + 1, n)])]
        head = client.heads(TOPIC)
        total = 2 + away + len(rest)

        print(f"2. a new node fetches the {total}-event stream back from its head")
        with tidings.Node(role="peer", bootstrap=broker.addrs()) as newcomer:
            c2 = newcomer.client()
            deadline = time.monotonic() + 30
            while c2.status()["peers"] < 1:
                if time.monotonic() > deadline:
                    print("error: the new node did not connect", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            started = time.monotonic()
            summary = c2.fetch(head[0], progress=lambda p: bar(p, started))
            print(f"\n   fetched {summary['blocks']} blocks from {len(summary['sources'])} peer(s) "
                  f"in {summary['seconds']:.2f} s: {summary['verified']} verified by the node")
            # Walk the stream back on the new node; the client verifies every event itself.
            cid, walked = head[0], 0
            while cid:
                ev = c2.get(cid)
                walked += 1
                cid = ev.prev[0] if ev.prev else None
            print(f"   walked {walked} events back through prev, each verified here")
            if walked != total or summary["blocks"] != total:
                print(f"error: expected {total} events", file=sys.stderr)
                return 1

            print("3. export as CAR v1")
            out = args.out or pathlib.Path(tmp) / "greenhouse.car"
            car = c2.export_car(TOPIC, out)
            print(f"   {out}: {car['bytes']:,} bytes, {car['events']} events, roots {car['roots']}, "
                  f"complete={car['complete']} (every block checked here)")
            if car["events"] != total or not car["complete"]:
                return 1
    print(f"history: events={total} missed={len(missed)} fetched={summary['blocks']} "
          f"car_events={car['events']} car_bytes={car['bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
