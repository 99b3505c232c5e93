"""tidings: content-based publish/subscribe over IPLD.

Every event is a signed DAG-CBOR block with a CID. This package runs a whole node inside your
process (``Node``) and talks to any node's HTTP API (``Client``), checking every event it hands
you against its CID and its author's signature, in Rust, so it never has to trust the node.

    import tidings

    with tidings.Node() as node:
        client = node.client()
        with client.subscribe('/stocks/** where order = "buy" and price < 10') as sub:
            client.publish("/stocks/euronext/CTT", {"order": "buy", "price": 5.55})
            print(next(sub).body)
"""

from ._tidings import (
    DEFAULT_API,
    BadRequest,
    Client,
    Conflict,
    Error,
    Event,
    Filter,
    Node,
    NotFound,
    Published,
    Subscription,
    Unauthorized,
    Unavailable,
    VerificationError,
    __version__,
    verify,
)

__all__ = [
    "DEFAULT_API",
    "BadRequest",
    "Client",
    "Conflict",
    "Error",
    "Event",
    "Filter",
    "Node",
    "NotFound",
    "Published",
    "Subscription",
    "Unauthorized",
    "Unavailable",
    "VerificationError",
    "__version__",
    "verify",
]
