"""publish / get / heads, the event's fields, verify(), Filter, Node and Client basics."""

import json
import threading
import time
import urllib.request

import pytest
import tidings
from helpers import poll

BODY = {
    "order": "buy",
    "price": 5.55,
    "number": 100,
    "big": 2**63,
    "neg": -(2**63),
    "ok": True,
    "none": None,
    "raw": b"\x00\x01\xfe",
    "list": [1, "two", 3.0, [b"x"]],
    "nested": {"a": {"b": "c"}},
}


def test_publish_get_heads(api):
    client = tidings.Client(api)
    peer = client.status()["peer_id"]
    first = client.publish("/t/basics", BODY)
    assert isinstance(first, tidings.Published)
    assert first.cid.startswith("bafyrei") and first.seq == 1 and first.copies >= 1
    assert first.heads == [first.cid]

    ev = client.get(first.cid)
    assert ev.cid == first.cid and ev.topic == "/t/basics" and ev.seq == 1
    assert ev.author == peer and ev.prev == []
    assert ev.body == BODY  # bytes stay bytes, floats floats, big ints exact
    assert abs(ev.time - time.time() * 1000) < 60_000
    # The JSON form is the node's own (GET /v1/events/{cid}), bytes in DAG-JSON form.
    with urllib.request.urlopen(f"{api}/v1/events/{first.cid}") as r:
        assert ev.to_json() == json.load(r)
    assert ev.to_json()["body"]["raw"] == {"/": {"bytes": "AAH+"}}

    second = client.publish("/t/basics", {"n": 2})
    assert second.seq == 2 and second.heads == [second.cid]
    assert client.get(second.cid).prev == [first.cid]
    assert client.heads("/t/basics") == [second.cid]
    assert client.heads("/t/nothing-here") == []

    # verify() checks a block against its CID, offline, in Rust.
    assert tidings.verify(ev.cid, ev.block) == ev
    with pytest.raises(tidings.VerificationError):
        tidings.verify(second.cid, ev.block)


def test_links_round_trip(node):
    client = node.client()
    target = client.publish("/t/links", {"n": 1})
    linked = client.publish("/t/links", {"see": {"/": target.cid}})
    assert client.get(linked.cid).body == {"see": {"/": target.cid}}


def test_filter_matches_offline():
    f = tidings.Filter('/stocks/** where order = "buy" and price < 10')
    assert f.root == "stocks"
    assert f.matches("/stocks/euronext/CTT", {"order": "buy", "price": 5.55})
    assert not f.matches("/stocks/euronext/CTT", {"order": "sell", "price": 5.55})
    assert not f.matches("/bonds/x", {"order": "buy", "price": 5.55})
    # A decimal string compares as a number, as on the node.
    assert tidings.Filter('/s/** where number > 50').matches("/s/a", {"number": "100"})
    seeds = tidings.Filter('{"topic": "/stocks/**", "order": "buy", "price": "<10"}')
    mongo = tidings.Filter('{"topic": "/stocks/**", "order": "buy", "price": {"$lt": 10}}')
    for body in ({"order": "buy", "price": 9}, {"order": "buy", "price": 11}, {"order": "x"}):
        assert seeds.matches("/stocks/a", body) == mongo.matches("/stocks/a", body) == f.matches("/stocks/a", body)
    assert str(f) and tidings.Filter(str(f)).matches("/stocks/a", {"order": "buy", "price": 1})


def test_node_lifecycle_and_restart(tmp_path):
    data = tmp_path / "n"
    with tidings.Node(data_dir=data) as node:
        assert node.status()["peer_id"] == node.peer_id
        assert node.status()["role"] == "broker"
        assert all(a.endswith("/p2p/" + node.peer_id) for a in node.addrs())
        cid = node.client().publish("/t/restart", {"kept": True}).cid
        peer = node.peer_id
    assert node.closed
    node.close()  # twice is fine
    with pytest.raises(tidings.Unavailable):
        node.client().heads("/t/restart")
    # The same data dir: same identity, same store (the previous node let go of both).
    with tidings.Node(data_dir=data) as again:
        assert again.peer_id == peer
        assert again.client().get(cid).body == {"kept": True}


def test_temporary_data_dir_is_removed():
    node = tidings.Node()
    d = node.data_dir
    assert (d / "store.redb").exists()
    node.close()
    assert not d.exists()


def test_client_defaults_from_environment(node, monkeypatch):
    monkeypatch.setenv("TIDINGS_API", node.api)
    client = tidings.Client()
    assert client.api == node.api
    assert client.status()["peer_id"] == node.peer_id
    monkeypatch.delenv("TIDINGS_API")
    assert tidings.Client().api == tidings.DEFAULT_API


def test_gil_is_released_while_waiting(node):
    """Another Python thread runs while a client call waits on the network."""
    client = node.client()
    stamps = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            stamps.append(time.monotonic())

    with client.subscribe("/t/gil/**") as sub:
        t = threading.Thread(target=spin)
        t.start()
        try:
            poll("the spinning thread to start", lambda: stamps)
            t0 = time.monotonic()
            assert sub.next(timeout=0.6) is None  # nothing published: waits the whole 0.6 s
            t1 = time.monotonic()
        finally:
            stop.set()
            t.join()
    # The other thread ran in the middle of the wait; holding the GIL would have frozen it.
    inside = [s for s in stamps if t0 + 0.15 < s < t1 - 0.15]
    assert len(inside) > 100, (len(inside), len(stamps))
