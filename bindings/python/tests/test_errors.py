"""Every error class, with the node's message and status."""

import math

import pytest
import tidings


def test_hierarchy():
    for cls in (tidings.BadRequest, tidings.Unauthorized, tidings.NotFound, tidings.Conflict,
                tidings.Unavailable, tidings.VerificationError):
        assert issubclass(cls, tidings.Error)
    assert tidings.Error.status is None and tidings.BadRequest.position is None


def test_bad_request(api):
    client = tidings.Client(api)
    # A bad filter keeps its position, offline and when subscribing.
    with pytest.raises(tidings.BadRequest) as e:
        tidings.Filter("/stocks/** where price <")
    assert e.value.position == len("/stocks/** where price <")
    with pytest.raises(tidings.BadRequest) as e:
        client.subscribe("/stocks/** where price < 10 and")
    assert e.value.position == len("/stocks/** where price < 10 and")
    assert "bad filter" in str(e.value)
    # Refused by the node: its message and status.
    with pytest.raises(tidings.BadRequest) as e:
        client.publish("no-leading-slash", {"a": 1})
    assert e.value.status == 400 and "topic" in str(e.value)
    with pytest.raises(tidings.BadRequest) as e:
        client.publish("/big", {"blob": b"x" * (1 << 20)})
    assert e.value.status == 413
    with pytest.raises(tidings.BadRequest) as e:
        client.heads("/a/*")
    assert e.value.status == 400
    # Refused before it is sent.
    for bad in (math.nan, math.inf, {1: "int key"}, object(), 2**64, -(2**64) - 1):
        with pytest.raises(tidings.BadRequest):
            client.publish("/a", {"v": bad})
    deep = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(tidings.BadRequest):
        client.publish("/a", deep)
    with pytest.raises(tidings.BadRequest):
        client.get("not-a-cid")
    with pytest.raises(tidings.BadRequest) as e:
        client.subscribe("/a/**", durable="no spaces allowed")
    assert e.value.status == 400
    # Integers at the edges of DAG-CBOR's range are fine.
    p = client.publish("/a", {"max": 2**64 - 1, "min": -(2**64)})
    assert client.get(p.cid).body == {"max": 2**64 - 1, "min": -(2**64)}


def test_not_found(node):
    client = node.client()
    with tidings.Node() as other:
        cid = other.client().publish("/elsewhere", {"n": 1}).cid
    with pytest.raises(tidings.NotFound) as e:
        client.get(cid)
    assert e.value.status == 404 and cid in str(e.value)
    with pytest.raises(tidings.NotFound):
        client.delete_durable("never-made")


def test_conflict(node):
    client = node.client()
    with client.subscribe("/c/** where a = 1", durable="c1") as sub:
        sub.close()
    with pytest.raises(tidings.Conflict) as e:
        client.subscribe("/c/** where a = 2", durable="c1")
    assert e.value.status == 409


def test_unavailable():
    # A peer-role node alone knows no broker for any root: 503.
    with tidings.Node(role="peer") as peer:
        with pytest.raises(tidings.Unavailable) as e:
            peer.client().publish("/u/x", {"n": 1})
        assert e.value.status == 503 and "broker" in str(e.value)
    # Nobody listening at all.
    closed = tidings.Node()
    api = closed.api
    closed.close()
    for call in (lambda c: c.status(), lambda c: c.subscribe("/u/**")):
        with pytest.raises(tidings.Unavailable) as e:
            call(tidings.Client(api))
        assert e.value.status is None and "cannot reach the node" in str(e.value)


def test_unauthorized(monkeypatch):
    with tidings.Node(token="s3cret") as node:
        anonymous = tidings.Client(node.api)
        for call in (lambda c: c.status(), lambda c: c.publish("/t", {}), lambda c: c.subscribe("/t/**")):
            with pytest.raises(tidings.Unauthorized) as e:
                call(anonymous)
            assert e.value.status == 401
        assert node.client().status()["peer_id"] == node.peer_id  # the node's client has it
        with pytest.raises(tidings.Unauthorized):
            tidings.Client(node.api, token="wrong").status()
        monkeypatch.setenv("TIDINGS_TOKEN", "s3cret")
        assert tidings.Client(node.api).publish("/t", {"ok": 1}).seq == 1


def test_bad_node_arguments():
    with pytest.raises(tidings.BadRequest):
        tidings.Node(role="king")
    with pytest.raises(tidings.BadRequest):
        tidings.Node(listen=["not a multiaddr"])
    with pytest.raises(tidings.BadRequest):
        tidings.Node(api="0.0.0.0:0")  # beyond loopback without a token
    with pytest.raises(tidings.BadRequest):
        tidings.Node(sync_interval=0)
