#!/usr/bin/env python3
"""Independent check of tidings event blocks (see ipld-schema/tests/interop.rs).

Usage: check.py FIXTURES.json

For every fixture written by the Rust side, with Python's own DAG-CBOR, multiformats and
ed25519 implementations:
  1. decode the Rust block, re-encode it: must be byte-identical;
  2. CIDv1(dag-cbor, sha2-256) of the bytes: must equal the Rust CID;
  3. strip the libp2p protobuf header off `author` (08 01 12 20): the 32 raw bytes must equal the
     public key derived from the fixed secret, and the ed25519 signature must verify over
     Python's own encoding of the map without `sig`; a tampered signature must not;
  4. build the event from scratch from its logical fields (DAG-JSON body, fixed secret), sign
     it, encode it: must equal the Rust block byte for byte (ed25519 is deterministic).

Exit status: 0 all good, 1 a mismatch, 2 packages missing.
"""
import base64
import json
import sys

REQ = "pip install -r ipld-schema/tests/interop/requirements.txt"
try:
    import dag_cbor
    from multiformats import CID, multihash
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
except ImportError as e:  # pragma: no cover - environment problem, reported clearly
    print(f"interop: missing Python package ({e}); install with: {REQ}", file=sys.stderr)
    sys.exit(2)

LIBP2P_ED25519_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
KEYS = {"v", "topic", "body", "author", "seq", "time", "prev", "sig"}


def from_dag_json(v):
    """DAG-JSON conventions -> Python IPLD data model, as multiformats/dag-cbor expect."""
    if isinstance(v, dict):
        if len(v) == 1 and "/" in v:
            inner = v["/"]
            if isinstance(inner, str):
                return CID.decode(inner)
            b64 = inner["bytes"]
            return base64.b64decode(b64 + "=" * (-len(b64) % 4))
        return {k: from_dag_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_dag_json(x) for x in v]
    return v


def cid_str(c):
    """Canonical string form: base32 for CIDv1, base58btc for CIDv0 (as Rust's `cid` prints)."""
    return c.encode("base32") if c.version == 1 else str(c)


def cid_of(data):
    return CID("base32", 1, "dag-cbor", multihash.digest(data, "sha2-256"))


def check(fx):
    name = fx["name"]
    block = bytes.fromhex(fx["block_hex"])

    # 1. decode + re-encode
    obj = dag_cbor.decode(block)
    assert isinstance(obj, dict) and set(obj) == KEYS, f"{name}: keys {sorted(obj)}"
    again = dag_cbor.encode(obj)
    assert again == block, f"{name}: re-encoding differs\n ours   {again.hex()}\n theirs {block.hex()}"

    # 2. CID
    cid = cid_of(block)
    assert cid_str(cid) == fx["cid"], f"{name}: CID {cid} != {fx['cid']}"

    # 3. author and signature
    secret = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(fx["secret_hex"]))
    pub_raw = secret.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert pub_raw.hex() == fx["public_key_hex"], f"{name}: public key from secret differs"
    author = obj["author"]
    assert author[:4] == LIBP2P_ED25519_PREFIX and len(author) == 36, f"{name}: author {author.hex()}"
    assert author[4:] == pub_raw, f"{name}: author key is not the fixed key"
    unsigned = {k: x for k, x in obj.items() if k != "sig"}
    msg = dag_cbor.encode(unsigned)
    assert msg.hex() == fx["signing_hex"], f"{name}: signing bytes differ"
    key = Ed25519PublicKey.from_public_bytes(author[4:])
    key.verify(obj["sig"], msg)  # raises InvalidSignature
    tampered = bytes([obj["sig"][0] ^ 1]) + obj["sig"][1:]
    try:
        key.verify(tampered, msg)
        raise AssertionError(f"{name}: a tampered signature verified")
    except InvalidSignature:
        pass

    # Field values as the Rust side meant them.
    assert obj["v"] == 1 and obj["topic"] == fx["topic"], name
    assert obj["seq"] == fx["seq"] and obj["time"] == fx["time"], name
    assert [cid_str(c) for c in obj["prev"]] == fx["prev"], f"{name}: prev"
    body = from_dag_json(fx["body"])
    assert dag_cbor.encode(obj["body"]) == dag_cbor.encode(body), f"{name}: body differs"

    # 4. build from scratch
    event = {
        "v": 1,
        "topic": fx["topic"],
        "body": body,
        "author": LIBP2P_ED25519_PREFIX + pub_raw,
        "seq": fx["seq"],
        "time": fx["time"],
        "prev": [CID.decode(c) for c in fx["prev"]],
    }
    event["sig"] = secret.sign(dag_cbor.encode(event))
    built = dag_cbor.encode(event)
    assert built == block, f"{name}: independently built block differs\n py   {built.hex()}\n rust {block.hex()}"
    assert cid_str(cid_of(built)) == fx["cid"], name
    return name


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 1
    with open(sys.argv[1], encoding="utf-8") as f:
        fixtures = json.load(f)
    if not fixtures:
        print("interop: no fixtures", file=sys.stderr)
        return 1
    failed = 0
    for fx in fixtures:
        try:
            print(f"ok   {check(fx)} {fx['cid']}")
        except Exception as e:  # report every fixture, then fail
            failed += 1
            print(f"FAIL {fx.get('name')}: {type(e).__name__}: {e}")
    print(f"interop: {len(fixtures) - failed}/{len(fixtures)} fixtures agree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
