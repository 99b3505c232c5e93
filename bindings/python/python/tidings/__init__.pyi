"""Type stubs for tidings (the native module is tidings._tidings)."""

import datetime
import os
import pathlib
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union, final

__version__: str
DEFAULT_API: str

# An event body: what JSON can hold, plus bytes (IPLD bytes). A link is {"/": "<cid>"}.
_Body = Any
_Since = Union[int, datetime.datetime, datetime.timedelta]
_Seconds = Union[float, datetime.timedelta]
_StrPath = Union[str, "os.PathLike[str]"]

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

class Error(Exception):
    """Base class of every tidings error."""

    status: Optional[int]
    """The node's HTTP status, or None when the error did not come from an answer."""

class BadRequest(Error):
    """Refused as invalid (HTTP 400, 405, 413): bad filter, topic, CID, body or name."""

    position: Optional[int]
    """For a filter: the byte offset of the problem."""

class Unauthorized(Error):
    """The node wants a bearer token (HTTP 401)."""

class NotFound(Error):
    """Not held by the node (HTTP 404), or a fetch found no peer with all of the history."""

    summary: Dict[str, Any]
    """On an incomplete fetch: the node's summary (set only then)."""

class Conflict(Error):
    """Conflicts with what the node holds (HTTP 409), e.g. a durable name with another filter."""

class Unavailable(Error):
    """Cannot be served now: HTTP 503, an unreachable node, a subscription the node ended."""

class VerificationError(Error):
    """Data from the node failed verification here (CID, signature, shape). Never data."""

@final
class Event:
    """An event verified in this process against its CID and its author's signature."""

    @property
    def cid(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def author(self) -> str:
        """The author's libp2p peer id."""
    @property
    def seq(self) -> int: ...
    @property
    def time(self) -> int:
        """Publisher clock, ms since the Unix epoch (advisory)."""
    @property
    def prev(self) -> List[str]: ...
    @property
    def body(self) -> _Body:
        """The payload: bytes as bytes, links as {"/": "<cid>"}."""
    @property
    def block(self) -> bytes:
        """The verified DAG-CBOR block."""
    def to_json(self) -> Dict[str, Any]:
        """As the node's JSON API shows it."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Published:
    """What publish returns."""

    @property
    def cid(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def copies(self) -> int:
        """Rendezvous members that stored the event before the answer."""
    @property
    def heads(self) -> List[str]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class Filter:
    """A filter in any syntax (text, the seeds' JSON, Mongo-style), parsed by the node's code."""

    def __new__(cls, text: str) -> "Filter":
        """Raises BadRequest (with position) if it does not parse."""
    def matches(self, topic: str, body: _Body) -> bool:
        """Whether an event on topic with body matches, exactly as the node decides."""
    @property
    def root(self) -> str: ...
    @property
    def text(self) -> str: ...

@final
class Subscription(Iterator[Event], AsyncIterator[Event]):
    """Verified events as they are published; iterate with for or async for."""

    def __iter__(self) -> "Subscription": ...
    def __next__(self) -> Event: ...
    def __aiter__(self) -> "Subscription": ...
    async def __anext__(self) -> Event: ...
    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None if timeout seconds pass first or it was closed."""
    def ack(self, event: Union[Event, str]) -> None:
        """Acknowledge an event of a durable subscription (a no-op on others)."""
    def close(self) -> None:
        """Send pending acks and a close frame; iteration stops."""
    def __enter__(self) -> "Subscription": ...
    def __exit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def filter(self) -> str: ...
    @property
    def durable(self) -> Optional[str]: ...
    @property
    def received_bytes(self) -> int:
        """WebSocket payload bytes received (CIDs and blocks)."""
    @property
    def received_events(self) -> int: ...

@final
class Client:
    """A client of a node's HTTP API; every Event it returns was verified here."""

    def __new__(cls, api: Optional[str] = None, token: Optional[str] = None) -> "Client":
        """api defaults to TIDINGS_API, then http://127.0.0.1:7700; token to TIDINGS_TOKEN."""
    @property
    def api(self) -> str: ...
    def publish(self, topic: str, body: _Body) -> Published: ...
    def publish_many(
        self, topic: str, bodies: Iterable[_Body], *, in_flight: int = 256
    ) -> List[Published]:
        """Publishes every body in order through one publish stream, up to in_flight awaiting
        acknowledgement at once. On a refusal nothing more is sent and the exception carries
        index (the refused body) and published (a Published, or None, per body)."""
    def get(self, cid: str) -> Event: ...
    def heads(self, topic: str) -> List[str]: ...
    def status(self) -> Dict[str, Any]: ...
    def subscribe(
        self, filter: str, durable: Optional[str] = None, since: Optional[_Since] = None
    ) -> Subscription: ...
    def delete_durable(self, name: str) -> None: ...
    def fetch(
        self,
        cid: str,
        until: Sequence[str] = ...,
        progress: Optional[Callable[[Dict[str, Any]], Any]] = None,
    ) -> Dict[str, Any]: ...
    def export_car(self, topic: str, path: _StrPath) -> Dict[str, Any]: ...
    def import_car(self, path: _StrPath) -> Dict[str, Any]: ...

@final
class Node:
    """A full node on its own threads in this process; a context manager."""

    def __new__(
        cls,
        data_dir: Optional[_StrPath] = None,
        api: Optional[str] = None,
        listen: Optional[Sequence[str]] = None,
        bootstrap: Sequence[str] = ...,
        role: str = "broker",
        replication: int = 3,
        token: Optional[str] = None,
        sync_interval: Optional[_Seconds] = None,
        durable_expiry: Optional[_Seconds] = None,
        retain_age: Optional[_Seconds] = None,
        retain_bytes: Optional[int] = None,
        threads: int = 2,
    ) -> "Node": ...
    @property
    def api(self) -> str: ...
    @property
    def peer_id(self) -> str: ...
    @property
    def data_dir(self) -> pathlib.Path: ...
    @property
    def closed(self) -> bool: ...
    def client(self) -> Client: ...
    def status(self) -> Dict[str, Any]: ...
    def addrs(self) -> List[str]:
        """Listen addresses with /p2p/<peer id>, for other nodes' bootstrap=."""
    def close(self) -> None: ...
    def __enter__(self) -> "Node": ...
    def __exit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def verify(cid: str, block: bytes) -> Event:
    """Verify block as the event cid names; raises VerificationError if it is not."""
