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


def test_fetch_reports_each_progress_line_the_node_sends():
    """The node sends a progress line every 250 ms, more than a short real fetch lasts; a
    stand-in for its /v1/fetch answers with a known sequence of lines instead."""
    import http.server
    import json
    import threading

    lines = [
        {"progress": {"blocks": 10, "bytes": 1000, "estimate": 30}},
        {"progress": {"blocks": 20, "bytes": 2000, "estimate": 30}},
        {"done": {"blocks": 30, "bytes": 3000, "verified": 30, "new_blocks": 30, "held": 0,
                  "missing": [], "sources": ["p"], "seconds": 0.5, "complete": True}},
    ]
    seen = {}

    class Fetch(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen["body"] = json.loads(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.send_header("content-type", "application/x-ndjson")
            self.end_headers()
            for line in lines:
                self.wfile.write((json.dumps(line) + "\n").encode())
                self.wfile.flush()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fetch)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = tidings.Client("http://127.0.0.1:%d" % server.server_address[1])
        cid = "bafyreiabjc4z3vq5nyzi4y6kmdeyovzgbzrhvyfypzpvumgt3vgmeweztm"
        calls = []
        summary = client.fetch(cid, until=[cid], progress=calls.append)
        assert seen["body"] == {"cid": cid, "until": [cid]}
        assert calls == [
            {"blocks": 10, "bytes": 1000, "estimate": 30},
            {"blocks": 20, "bytes": 2000, "estimate": 30},
            {"blocks": 30, "bytes": 3000, "estimate": 30},
        ]
        assert summary["verified"] == 30 and summary["complete"]
        # A stream that ends without its summary is an error, not a result.
        lines[:] = lines[:1]
        with pytest.raises(tidings.Unavailable):
            client.fetch(cid)
        # So is a node-side failure.
        lines[:] = [{"error": "no peer answered"}]
        with pytest.raises(tidings.Unavailable) as e:
            client.fetch(cid)
        assert "no peer answered" in str(e.value)
    finally:
        server.shutdown()
