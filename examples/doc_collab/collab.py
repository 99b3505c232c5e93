"""A shared text document with pycrdt (Yjs) over tidings.

Three writers on three nodes type concurrently into /docs/<name>, one Yjs update per event,
each applying the others' updates from its subscription. A fourth joins late on its own node and
rebuilds the document from the stream's history, then follows live. One writer's node goes
offline; its writer keeps editing; it comes back, publishes what it wrote and gets what it
missed. All four end with the same text and the same Yjs state, and once a writer publishes
after the merge the stream has a single head again.

    python examples/doc_collab/collab.py            # 30 edits per writer per phase
    python examples/doc_collab/collab.py --short    # 6
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import sys
import tempfile
import time
from typing import Dict, List, Optional

from pycrdt import Doc, Text

import tidings

WORDS = ("tidings carries every keystroke as a signed block and the document "
         "converges wherever it is typed offline or online").split()
DEADLINE = 60.0
# Every node is a broker and holds the whole document (the rendezvous set is all four), so
# whichever node routes an update can reach every other one.
K = 4


def state_vector(sv: bytes) -> Dict[int, int]:
    """A Yjs state vector (varint count, then client/clock varint pairs) as {client: clock}."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        out = shift = 0
        while True:
            b = sv[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return out

    return dict((varint(), varint()) for _ in range(varint()))


class Writer:
    """One person's copy of the document, on one node."""

    def __init__(self, name: str, node: tidings.Node, topic: str, seed: int):
        self.name, self.topic = name, topic
        self.rng = random.Random(seed)
        self.doc = Doc(client_id=seed)
        self.text = self.doc.get("body", type=Text)
        self.published = 0
        self.applied = 0
        self.sub: Optional[tidings.Subscription] = None
        self.task: Optional[asyncio.Task] = None
        self.attach(node)
        WRITERS.append(self)

    def attach(self, node: tidings.Node) -> None:
        self.node, self.client = node, node.client()

    def edit(self) -> bytes:
        """One local edit (insert a word, sometimes delete a few characters): its Yjs update."""
        before = self.doc.get_state()
        n = len(self.text)
        if n > 40 and self.rng.random() < 0.25:
            at = self.rng.randrange(n - 6)
            del self.text[at:at + self.rng.randint(1, 6)]
        else:
            self.text.insert(self.rng.randint(0, n), self.rng.choice(WORDS) + " ")
        return self.doc.get_update(before)

    async def publish(self, update: bytes) -> tidings.Published:
        p = await asyncio.to_thread(self.client.publish, self.topic, {"update": update, "by": self.name})
        self.published += 1
        return p

    async def type(self, edits: int) -> None:
        for _ in range(edits):
            await self.publish(self.edit())

    async def follow(self, **subscribe: object) -> None:
        """Applies everyone else's updates as they arrive (every event verified by the binding)."""
        self.sub = await asyncio.to_thread(self.client.subscribe, self.topic, **subscribe)
        self.task = asyncio.create_task(self._apply(self.sub))

    async def _apply(self, sub: tidings.Subscription) -> None:
        async for ev in sub:
            if ev.author != self.node.peer_id:  # our own edits are in the document already
                self.doc.apply_update(ev.body["update"])
                self.applied += 1
            sub.ack(ev)  # a no-op unless durable

    async def unfollow(self) -> None:
        if self.sub is not None:
            await asyncio.to_thread(self.sub.close)
            await self.task
            self.sub = self.task = None


WRITERS: List["Writer"] = []  # everyone, for the report when something does not converge


def report() -> str:
    return "\n".join(
        f"  {w.name}: {len(str(w.text))} characters, published {w.published}, applied {w.applied}, "
        f"state {state_vector(w.doc.get_state())}"
        for w in WRITERS
    )


async def until(what: str, check, deadline: float = DEADLINE) -> float:
    """Polls check() until true; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline:
            raise SystemExit(f"error: timed out after {deadline:.0f} s waiting for {what}\n{report()}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def same(writers: List[Writer]) -> bool:
    texts = {str(w.text) for w in writers}
    states = [state_vector(w.doc.get_state()) for w in writers]
    return len(texts) == 1 and all(s == states[0] for s in states)


async def sees_brokers(node: tidings.Node, brokers: int) -> None:
    """Waits until `node` knows `brokers` brokers (itself included, if it is one)."""
    await until(f"{node.peer_id} to see {brokers} brokers",
                lambda: node.status()["brokers"] >= brokers)


def heads(nodes: List[tidings.Node], topic: str) -> List[List[str]]:
    return [sorted(n.client().heads(topic)) for n in nodes]


async def run(base: pathlib.Path, edits: int, name: str) -> int:
    topic = f"/docs/{name}"
    a = tidings.Node(data_dir=base / "a", replication=K)
    b = tidings.Node(data_dir=base / "b", bootstrap=a.addrs(), replication=K)
    c = tidings.Node(data_dir=base / "c", bootstrap=a.addrs(), replication=K)
    nodes = [a, b, c]
    for n in nodes:
        await sees_brokers(n, 3)
    ana, ben, cai = (Writer(w, n, topic, s) for w, n, s in (("ana", a, 1), ("ben", b, 2), ("cai", c, 3)))
    writers = [ana, ben, cai]
    for w in writers:
        await w.follow(durable=f"writer-{w.name}")

    print(f"1. three writers on three nodes type {edits} edits each, concurrently")
    await asyncio.gather(*(w.type(edits) for w in writers))
    t1 = await until("the three copies to converge", lambda: same(writers))
    print(f"   converged {t1:.2f} s after the last edit: {len(str(ana.text))} characters, "
          f"heads {len(a.client().heads(topic))}")

    print("2. a fourth joins late on its own node and rebuilds the document from history")
    d = tidings.Node(data_dir=base / "d", bootstrap=a.addrs(), replication=K)
    dee = Writer("dee", d, topic, 4)
    for n in nodes + [d]:
        await sees_brokers(n, 4)
    await dee.follow(since=0)  # stored events first, then live ones, no gap at the seam
    await until("the late joiner to rebuild the document", lambda: same(writers + [dee]))
    print(f"   rebuilt {len(str(dee.text))} characters from {dee.applied} updates; following live")
    await asyncio.gather(*(w.type(edits // 2 or 1) for w in writers))
    await until("all four to converge", lambda: same(writers + [dee]))

    print("3. cai's node goes offline; cai keeps editing; so do ana and ben")
    await cai.unfollow()
    c.close()
    offline = [cai.edit() for _ in range(edits)]
    await asyncio.gather(ana.type(edits), ben.type(edits))
    print(f"   cai wrote {len(offline)} updates offline; ana and ben {2 * edits} online")

    print("4. cai's node comes back: cai publishes what it wrote and gets what it missed")
    back = time.monotonic()
    c = tidings.Node(data_dir=base / "c", bootstrap=a.addrs(), replication=K)
    nodes = [a, b, c, d]
    cai.attach(c)
    await sees_brokers(c, 4)
    # One Yjs update per event, as typed. Its node links the heads it had before it went
    # away, so these may fork the stream; the answers say what the heads are.
    back_heads = [len((await cai.publish(u)).heads) for u in offline]
    await cai.follow(durable="writer-cai")  # the durable kept what it missed
    await until("all four to converge after the merge", lambda: same(writers + [dee]))
    converge = time.monotonic() - back
    heads_before = max(back_heads)
    print(f"   all four converged {converge:.2f} s after cai came back; its publishes left up to "
          f"{heads_before} heads, {back_heads[-1]} after its last")

    print("5. ana publishes after the merge")
    last = await ana.publish(ana.edit())
    await until("a single head on every node", lambda: heads(nodes, topic) == [[last.cid]] * len(nodes))
    heads_after = len(a.client().heads(topic))
    await until("all four to converge", lambda: same(writers + [dee]))
    final = str(ana.text)
    print(f"   single head {last.cid}; final document, {len(final)} characters:\n")
    print("   " + final[:300] + ("…" if len(final) > 300 else ""))
    updates = sum(w.published for w in writers)
    for w in writers + [dee]:
        await w.unfollow()
    for n in nodes:
        n.close()
    print(f"\ndoc_collab: writers=3 late_joiners=1 updates={updates} offline_updates={len(offline)} "
          f"converge_s={converge:.2f} final_length={len(final)} "
          f"heads_before_merge={heads_before} heads_after={heads_after}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edits", type=int, default=30, help="edits per writer per phase")
    p.add_argument("--short", action="store_true", help="6 edits per writer per phase (the CI run)")
    p.add_argument("--name", default="notes", help="the document: topic /docs/<name>")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="doc-collab-") as base:
        return asyncio.run(run(pathlib.Path(base), 6 if args.short else args.edits, args.name))


if __name__ == "__main__":
    sys.exit(main())
