"""Shared test helpers: a `tidings node` process, deadlines, and a byte-flipping proxy."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Callable, List, Optional

ROOT = pathlib.Path(__file__).resolve().parents[3]


def tidings_bin() -> str:
    """The `tidings` binary: $TIDINGS_BIN, else target/{debug,release}/tidings of this checkout."""
    env = os.environ.get("TIDINGS_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        candidate = ROOT / "target" / profile / "tidings"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("tidings")
    if found:
        return found
    raise RuntimeError(
        "no tidings binary: run `cargo build -p tidings-node --features test-faults` first, "
        "or set TIDINGS_BIN"
    )


def poll(what: str, fn: Callable[[], object], timeout: float = 20.0, every: float = 0.02):
    """Calls fn until it returns something truthy, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class NodeProcess:
    """`tidings node` as a real process on OS-chosen ports."""

    def __init__(self, data: pathlib.Path, *extra: str, env: Optional[dict] = None):
        self.data = data
        self.log_path = data.parent / (data.name + ".log")
        self.log = open(self.log_path, "wb")
        args = [
            tidings_bin(), "node", "--data", str(data), "--api", "127.0.0.1:0",
            "--listen", "/ip4/127.0.0.1/tcp/0", *extra,
        ]
        # A node killed with SIGKILL leaves its api.addr behind: read only the new one.
        (data / "api.addr").unlink(missing_ok=True)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        addr_file = data / "api.addr"

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"tidings node exited: {self.log_path.read_text()}")
            return addr_file.exists() and addr_file.read_text().strip()

        self.api = poll("the node's api.addr", ready)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class FlipProxy:
    """A TCP proxy between a client and a node that, while `marker` is set, flips one bit of
    the last byte of every occurrence of `marker` in what the node sends back, wherever it is
    (an HTTP body, a WebSocket frame). Lengths never change, so framing stays intact and only
    the content is forged: what a node (or anything on the path) lying about an event does.
    Only events whose body holds the marker are touched."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.marker: Optional[bytes] = None
        self.flipped = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.api = "http://127.0.0.1:%d" % self._listener.getsockname()[1]
        self._socks: List[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self._socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, tamper: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                marker = self.marker
                if tamper and marker:
                    data = bytearray(chunk)
                    window = tail + chunk
                    start = 0
                    while True:
                        at = window.find(marker, start)
                        if at < 0:
                            break
                        last = at + len(marker) - 1 - len(tail)
                        if last >= 0:  # ends in this chunk (earlier ones were flipped already)
                            data[last] ^= 0x01
                            with self._lock:
                                self.flipped += 1
                        start = at + 1
                    chunk = bytes(data)
                    tail = window[-(len(marker) - 1):] if len(marker) > 1 else b""
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
