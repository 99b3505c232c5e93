"""fetch with progress between two nodes, and a CAR round trip."""

import pytest
import tidings
from helpers import poll

N = 300


def publish_stream(client, topic, n):
    return [client.publish(topic, {"n": i, "pad": "x" * 64}).cid for i in range(n)]


def test_fetch_with_progress():
    with tidings.Node() as a:
        cids = publish_stream(a.client(), "/hist/stream", N)
        # A peer-role node joined to `a` holds nothing of it until it fetches.
        with tidings.Node(role="peer", bootstrap=a.addrs()) as b:
            client = b.client()
            poll("b to see a", lambda: client.status()["peers"] >= 1)
            with pytest.raises(tidings.NotFound):
                client.get(cids[0])
            calls = []
            summary = client.fetch(cids[-1], progress=calls.append)
            assert summary["complete"] and summary["missing"] == []
            assert summary["blocks"] == N and summary["verified"] == N and summary["new_blocks"] == N
            # Progress: counts never go down, and the last call has the final ones.
            assert calls, "progress was never called"
            blocks = [c["blocks"] for c in calls]
            assert blocks == sorted(blocks) and blocks[-1] == N
            assert calls[-1]["bytes"] == summary["bytes"]
            # b holds the whole stream now, each block verified again here on the way out.
            assert client.get(cids[0]).body["n"] == 0
            assert client.heads("/hist/stream") == [cids[-1]]
            # until= stops at a CID: nothing new is needed.
            again = client.fetch(cids[-1], until=[cids[-2]])
            assert again["complete"] and again["new_blocks"] == 0


def test_fetch_of_unknown_history_is_not_found():
    with tidings.Node() as a, tidings.Node() as b:
        cid = a.client().publish("/hist/lonely", {"n": 1}).cid
        # b is not connected to a: nobody it can ask has the block.
        with pytest.raises(tidings.NotFound) as e:
            b.client().fetch(cid)
        assert e.value.summary["missing"] == [cid]


def test_car_round_trip(tmp_path):
    car = tmp_path / "stream.car"
    with tidings.Node() as a:
        client = a.client()
        cids = publish_stream(client, "/hist/car", 50)
        summary = client.export_car("/hist/car", car)
        assert summary["events"] == 50 and summary["blocks"] == 50 and summary["complete"]
        assert summary["roots"] == [cids[-1]] and summary["bytes"] == car.stat().st_size
    with tidings.Node() as c:
        client = c.client()
        imported = client.import_car(car)
        assert imported == {"blocks": 50, "events": 50, "new_blocks": 50}
        assert client.heads("/hist/car") == [cids[-1]]
        assert [client.get(x).body["n"] for x in cids] == list(range(50))
        # Exported again from the importer: the same stream, and it verifies here too.
        again = client.export_car("/hist/car", tmp_path / "again.car")
        assert again["events"] == 50 and again["roots"] == [cids[-1]]
        # A damaged file is refused whole by the node.
        damaged = tmp_path / "damaged.car"
        data = bytearray(car.read_bytes())
        data[-5] ^= 0xFF
        damaged.write_bytes(bytes(data))
        with tidings.Node() as d:
            with pytest.raises(tidings.BadRequest):
                d.client().import_car(damaged)
            assert d.client().heads("/hist/car") == []
