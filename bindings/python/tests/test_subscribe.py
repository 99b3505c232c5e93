"""Subscriptions: the three filter syntaxes against an oracle, durable ones, asyncio."""

import asyncio
import random

import pytest
import tidings

EXCHANGES = ["Euronext Lisboa", "NYSE", "XETRA"]
SYMBOLS = ["CTT", "EDP", "GALP"]
FILTERS = {
    "text": '/stocks/** where exchange = "Euronext Lisboa" and order = "buy" and number > 50 and price < 10',
    "seeds": '{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": ">50", "price": "<10"}',
    "mongo": '{"topic": "/stocks/**", "exchange": "Euronext Lisboa", "order": "buy", "number": {"$gt": 50}, "price": {"$lt": 10}}',
}
SENTINEL = {"exchange": "Euronext Lisboa", "order": "buy", "number": 51, "price": 1, "last": True}


def oracle(topic, body):
    """The filters above, written independently of the matcher."""
    return (
        topic.startswith("/stocks/")
        and body.get("exchange") == "Euronext Lisboa"
        and body.get("order") == "buy"
        and float(body["number"]) > 50
        and body["price"] < 10
    )


def quotes(seed, n):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ex = rng.choice(EXCHANGES)
        topic = "/stocks/%s/%s" % (ex.split()[0].lower(), rng.choice(SYMBOLS))
        number = rng.randint(1, 200)
        body = {
            "exchange": ex,
            "order": rng.choice(["buy", "sell"]),
            # The seeds send numbers as strings; a decimal string compares as a number.
            "number": str(number) if rng.random() < 0.5 else number,
            "price": round(rng.uniform(1, 20), 2),
        }
        out.append((topic, body))
    return out


def drain_until_sentinel(sub, timeout=20):
    got = []
    while True:
        ev = sub.next(timeout=timeout)
        assert ev is not None, f"no event within {timeout} s after {len(got)}"
        got.append(ev)
        if ev.body.get("last"):
            return got


def test_three_syntaxes_against_oracle(api):
    client = tidings.Client(api)
    events = quotes(seed=7, n=150)
    expected = [(t, b) for t, b in events if oracle(t, b)]
    assert 5 < len(expected) < 60, len(expected)  # the seed gives a real mix
    subs = {name: client.subscribe(f) for name, f in FILTERS.items()}
    everything = client.subscribe("/stocks/**")
    try:
        cids = []
        for topic, body in events:
            cids.append(client.publish(topic, body).cid)
        client.publish("/stocks/euronext/CTT", SENTINEL)
        want_cids = [c for c, (t, b) in zip(cids, events) if oracle(t, b)]
        for name, sub in subs.items():
            got = drain_until_sentinel(sub)
            # Exactly the matching events, once each, in publish order, then the sentinel.
            assert [e.cid for e in got[:-1]] == want_cids, name
            assert [(e.topic, e.body) for e in got[:-1]] == expected, name
        all_events = drain_until_sentinel(everything)
        assert [e.cid for e in all_events[:-1]] == cids
        # The offline matcher agrees with the oracle on every event, in every syntax.
        for f in FILTERS.values():
            flt = tidings.Filter(f)
            assert [flt.matches(e.topic, e.body) for e in all_events] == [oracle(e.topic, e.body) for e in all_events]
        # The filtered subscriptions carried fewer bytes than the everything one.
        assert subs["text"].received_bytes < everything.received_bytes
        assert subs["text"].received_events == len(expected) + 1
    finally:
        for s in [*subs.values(), everything]:
            s.close()


def test_durable_ack_disconnect_resume(api):
    client = tidings.Client(api)
    f = "/jobs/** where kind = \"build\""
    sub = client.subscribe(f, durable="builder")
    assert sub.durable == "builder"
    first = [client.publish("/jobs/a", {"kind": "build", "n": n}).cid for n in range(1, 6)]
    got = [sub.next(timeout=20) for _ in range(5)]
    assert [e.cid for e in got] == first
    sub.ack(got[2])  # acks are cumulative per stream: 1..3 are done, 4 and 5 are not
    sub.close()
    assert sub.closed and sub.next(timeout=0) is None

    # Away: published meanwhile (and an event the filter does not take).
    client.publish("/jobs/a", {"kind": "test", "n": 0})
    later = [client.publish("/jobs/a", {"kind": "build", "n": n}).cid for n in range(6, 10)]

    with client.subscribe(f, durable="builder") as back:
        client.publish("/jobs/a", {"kind": "build", "last": True})
        got = drain_until_sentinel(back)
        # The unacknowledged ones, then what was missed, in order, once each.
        assert [e.cid for e in got[:-1]] == first[3:] + later
        back.ack(got[-1])
    with client.subscribe(f, durable="builder") as again:
        client.publish("/jobs/a", {"kind": "build", "last": True, "again": True})
        got = drain_until_sentinel(again)
        assert [e.body.get("again") for e in got] == [True]  # nothing old came back
        again.ack(got[-1])
    # The name is bound to its filter.
    with pytest.raises(tidings.Conflict) as e:
        client.subscribe('/jobs/** where kind = "test"', durable="builder")
    assert e.value.status == 409
    client.delete_durable("builder")
    with pytest.raises(tidings.NotFound):
        client.delete_durable("builder")


def test_since_replays_history_then_live(node):
    client = node.client()
    old = [client.publish("/replay/a", {"n": n}).cid for n in range(3)]
    with client.subscribe("/replay/**", since=0) as sub:
        client.publish("/replay/a", {"last": True})
        got = drain_until_sentinel(sub)
        assert [e.cid for e in got[:3]] == old and len(got) == 4


def test_async_iteration_and_cancel_loses_nothing(node):
    client = node.client()

    async def main():
        sub = client.subscribe("/async/**")
        # A wait cancelled before anything arrives...
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.__anext__(), timeout=0.2)
        # ...then events published from another thread (the loop is never blocked).
        cids = await asyncio.to_thread(
            lambda: [client.publish("/async/x", {"n": n}).cid for n in range(20)]
        )
        got = []
        async for ev in sub:
            got.append(ev.cid)
            if len(got) == 20:
                break
        sub.close()
        assert [c async for c in _cids(sub)] == []  # closed: iteration ends
        return cids, got

    cids, got = asyncio.run(main())
    assert got == cids


async def _cids(sub):
    async for ev in sub:
        yield ev.cid


def test_node_shutdown_ends_subscription_with_reason():
    node = tidings.Node()
    sub = node.client().subscribe("/bye/**")
    node.close()
    with pytest.raises(tidings.Unavailable) as e:
        for _ in sub:
            pass
    assert "shutting down" in str(e.value)
    assert sub.closed
