"""Client.publish_many: many publishes in flight on one publish stream, each answered only once
durable, in order, and exactly which were acknowledged when something goes wrong."""

import signal
import threading
import time

import pytest
import tidings
from helpers import NodeProcess, poll

TOO_BIG = {"blob": b"x" * (1 << 20)}  # over the node's 1 MiB event limit: 413


def test_in_order_and_chained(api):
    client = tidings.Client(api)
    n = 300
    got = client.publish_many("/pm/order", ({"n": k} for k in range(n)))  # any iterable
    assert [p.seq for p in got] == list(range(1, n + 1))
    assert len({p.cid for p in got}) == n and all(p.copies >= 1 for p in got)
    assert got[-1].heads == [got[-1].cid] and client.heads("/pm/order") == [got[-1].cid]
    for k in (0, 1, 150, n - 1):
        ev = client.get(got[k].cid)
        assert ev.body == {"n": k} and ev.seq == k + 1
        assert ev.prev == ([got[k - 1].cid] if k else [])
    # Interleaves with single publishes on the same stream of events.
    one = client.publish("/pm/order", {"n": n})
    assert one.seq == n + 1 and client.get(one.cid).prev == [got[-1].cid]
    assert client.publish_many("/pm/order", []) == []
    assert [p.seq for p in client.publish_many("/pm/order", [{}], in_flight=1)] == [n + 2]


def test_refusal_says_which_were_acknowledged(api):
    client = tidings.Client(api)
    # One in flight: everything before the refused body is stored, nothing after it is sent.
    with pytest.raises(tidings.BadRequest) as e:
        client.publish_many("/pm/refused", [{"n": 0}, {"n": 1}, TOO_BIG, {"n": 3}, {"n": 4}],
                            in_flight=1)
    err = e.value
    assert err.status == 413 and err.index == 2 and "event 2 of 5" in str(err)
    assert [p is None for p in err.published] == [False, False, True, True, True]
    assert [p.seq for p in err.published[:2]] == [1, 2]
    assert client.heads("/pm/refused") == [err.published[1].cid]
    # Many in flight: the refused one is None; every other entry was acknowledged and is held.
    bodies = [{"m": k} for k in range(50)]
    bodies[10] = TOO_BIG
    with pytest.raises(tidings.BadRequest) as e:
        client.publish_many("/pm/refused2", bodies)
    err = e.value
    assert err.index == 10 and err.published[10] is None and len(err.published) == 50
    assert all(p is not None for p in err.published[:10])
    for k, p in enumerate(err.published):
        if p is not None:
            assert client.get(p.cid).body == bodies[k]


def test_bad_input_publishes_nothing(node):
    client = node.client()
    with pytest.raises(tidings.BadRequest):
        client.publish_many("/pm/bad", [{"n": 0}, {"n": 1}, {"n": object()}])
    assert client.heads("/pm/bad") == []
    for bad in (0, 4097, -1):
        with pytest.raises((tidings.BadRequest, OverflowError)) as e:
            client.publish_many("/pm/bad", [{}], in_flight=bad)
        if isinstance(e.value, tidings.BadRequest):
            assert "in_flight" in str(e.value)
    with pytest.raises(TypeError):
        client.publish_many("/pm/bad", 5)
    with pytest.raises(tidings.BadRequest) as e:
        client.publish_many("no-leading-slash", [{}])
    assert e.value.status == 400 and e.value.index == 0 and e.value.published == [None]
    assert client.heads("/pm/bad") == []


def test_unavailable_and_unauthorized():
    with tidings.Node(role="peer") as peer:  # alone: no broker for any root, 503
        with pytest.raises(tidings.Unavailable) as e:
            peer.client().publish_many("/pm/u", [{"n": 1}, {"n": 2}])
        assert e.value.status == 503 and e.value.index == 0 and e.value.published[0] is None
    with tidings.Node(token="s3cret") as node:
        with pytest.raises(tidings.Unauthorized) as e:
            tidings.Client(node.api).publish_many("/pm/t", [{}])
        assert e.value.status == 401 and e.value.published == [None]
        assert [p.seq for p in node.client().publish_many("/pm/t", [{}, {}])] == [1, 2]
    closed = tidings.Node()
    api = closed.api
    closed.close()
    with pytest.raises(tidings.Unavailable) as e:
        tidings.Client(api).publish_many("/pm/u", [{}])
    assert e.value.status is None and e.value.published == [None]


def test_acknowledged_survives_kill_9(tmp_path):
    """The node is killed (SIGKILL) while a long publish_many is under way: the call raises
    Unavailable, and every event it reported as published is in the store after a restart."""
    data = tmp_path / "node"
    proc = NodeProcess(data)
    client = tidings.Client(proc.api)
    n = 200_000
    outcome = {}

    def run():
        try:
            outcome["got"] = client.publish_many("/pm/crash", ({"k": k} for k in range(n)))
        except tidings.Error as e:
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    # Killed once thousands are acknowledged, with a full window in flight, long before the end.
    def progressed():
        heads = client.heads("/pm/crash")
        return heads and client.get(heads[0]).seq >= 3000

    poll("acknowledged publishes", progressed, timeout=120)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait()
    t.join(timeout=60)
    assert not t.is_alive()
    assert "got" not in outcome, "the node was killed before the last event was published"
    err = outcome["error"]
    assert isinstance(err, tidings.Unavailable) and len(err.published) == n
    acked = [(k, p) for k, p in enumerate(err.published) if p is not None]
    assert acked and acked[-1][0] < n - 1
    proc.stop()

    again = NodeProcess(data)
    try:
        after = tidings.Client(again.api)
        # Every acknowledged event is held, with its body; the sample bounds the test's time.
        step = max(1, len(acked) // 200)
        for k, p in acked[::step] + [acked[-1]]:
            assert after.get(p.cid).body == {"k": k}
        # The stream goes on from what was stored, with no gap before the last acknowledged.
        head = after.get(after.heads("/pm/crash")[0])
        assert head.seq >= acked[-1][1].seq
    finally:
        again.stop()


def test_faster_than_one_by_one(node):
    """The reason it exists: a round trip per event is what a loop of publish pays."""
    client = node.client()
    n = 1000
    t0 = time.perf_counter()
    for k in range(n):
        client.publish("/pm/one", {"k": k})
    one_by_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.publish_many("/pm/many", [{"k": k} for k in range(n)])
    many = time.perf_counter() - t0
    assert one_by_one / many >= 2, f"publish {n / one_by_one:.0f}/s, publish_many {n / many:.0f}/s"
