"""A proxy between the client and the node flips a byte inside events: the binding must raise,
never return the forged event. The same proxy passes clean events untouched, and a JSON reader
behind it is fooled, so it is the verification that catches the forgery."""

import json
import urllib.request

import pytest
import tidings
from helpers import FlipProxy

MARKER = b"tamper-me"


@pytest.fixture
def proxied(api):
    proxy = FlipProxy(api)
    try:
        yield tidings.Client(api), tidings.Client(proxy.api), proxy
    finally:
        proxy.close()


def test_clean_events_pass_through(proxied):
    direct, client, proxy = proxied
    cid = direct.publish("/tamper/a", {"note": "tamper-me"}).cid
    assert client.get(cid).body == {"note": "tamper-me"}  # the marker is not armed yet
    assert proxy.flipped == 0


def test_get_of_a_flipped_block_raises(proxied):
    direct, client, proxy = proxied
    cid = direct.publish("/tamper/a", {"note": "tamper-me", "price": 5}).cid
    proxy.marker = MARKER
    with pytest.raises(tidings.VerificationError) as e:
        client.get(cid)
    assert cid in str(e.value)
    assert proxy.flipped == 1
    # A client that trusts the node's JSON takes the forgery as data.
    with urllib.request.urlopen(f"{proxy.api}/v1/events/{cid}") as r:
        assert json.load(r)["body"]["note"] == "tamper-md"


def test_subscription_raises_on_a_flipped_event(proxied):
    direct, client, proxy = proxied
    proxy.marker = MARKER
    with client.subscribe("/tamper/**") as sub:
        good = direct.publish("/tamper/a", {"note": "fine"}).cid
        direct.publish("/tamper/a", {"note": "tamper-me"})
        direct.publish("/tamper/a", {"note": "after"})
        assert sub.next(timeout=20).cid == good
        with pytest.raises(tidings.VerificationError):
            sub.next(timeout=20)
        # A node caught forging is not believed further: the subscription is over.
        assert sub.closed and sub.next(timeout=0) is None
    assert proxy.flipped >= 1


def test_replayed_history_is_verified_too(proxied):
    direct, client, proxy = proxied
    direct.publish("/tamper/h", {"note": "old"})
    direct.publish("/tamper/h", {"note": "tamper-me"})
    proxy.marker = MARKER
    with client.subscribe("/tamper/**", since=0) as sub:
        assert sub.next(timeout=20).body == {"note": "old"}
        with pytest.raises(tidings.VerificationError):
            sub.next(timeout=20)


def test_export_of_a_flipped_stream_writes_nothing(proxied, tmp_path):
    direct, client, proxy = proxied
    direct.publish("/tamper/car", {"note": "tamper-me"})
    proxy.marker = MARKER
    out = tmp_path / "x.car"
    with pytest.raises(tidings.VerificationError):
        client.export_car("/tamper/car", out)
    assert not out.exists()
