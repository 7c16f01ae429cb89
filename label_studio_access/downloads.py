"""The two limits every image download runs under: a total deadline, and a byte budget shared by a process's threads.

**Deadline.** A socket timeout bounds one read, not a download: a server that sends one byte a second never trips it
(the attack held a webhook for 43 s). A :class:`Deadline` is the total time one download may take, redirects, token
exchange and waiting for budget included. Connections made through a session from :func:`watched_session` register
with the deadline of the thread that uses them; when it passes, a timer shuts their sockets down, which ends any
blocked read (headers or body) at once. DNS lookups are the one step no socket timeout reaches.

**Budget.** Each download reserves the bytes it may hold before it reads a byte of the body: the ``Content-Length``
when the server states it, else the per-image cap. A download holds its whole reservation or nothing, so downloads
that wait for room never hold any and cannot deadlock; they wait until their deadline. What a caller keeps after the
download returns is the caller's (decoding has its own bound).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

# --- deadline ---------------------------------------------------------------------------------------------------------

_WATCH_LOCK = threading.Lock()  # guards which deadline owns a connection, and the shutdown that acts on it
_current = threading.local()


class Deadline:
    """The total time one download may take; once a connection is watched, a timer cuts it off at the end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._connections: list[HTTPConnection] = []
        self._timer: threading.Timer | None = None
        self._done = False
        self.fired = False  # the timer shut this download's sockets

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def passed(self) -> bool:
        return self.fired or time.monotonic() >= self._end

    def watch(self, connection: HTTPConnection) -> None:
        """Own ``connection`` until it serves another download; arm the timer on the first one."""
        with _WATCH_LOCK:
            if self._done:
                return
            connection._minigpt_deadline = self  # type: ignore[attr-defined]
            self._connections.append(connection)
            if self._timer is None:
                self._timer = threading.Timer(self.remaining(), self._expire)
                self._timer.daemon = True
                self._timer.start()

    def _expire(self) -> None:
        with _WATCH_LOCK:
            if self._done:
                return
            self.fired = True
            for connection in self._connections:
                sock = connection.sock
                # a connection back in the pool and reused by another download belongs to that download now
                if getattr(connection, "_minigpt_deadline", None) is self and sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv; close() alone would not

    def finish(self) -> None:
        with _WATCH_LOCK:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()
            for connection in self._connections:
                if getattr(connection, "_minigpt_deadline", None) is self:
                    connection._minigpt_deadline = None  # type: ignore[attr-defined]
            self._connections.clear()


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """A deadline for the calling thread's requests through watched sessions, until the block ends."""
    outer = getattr(_current, "deadline", None)
    limit = Deadline(min(seconds, outer.remaining()) if outer is not None else seconds)
    _current.deadline = limit
    try:
        yield limit
    finally:
        limit.finish()
        _current.deadline = outer


def _watch(connection: HTTPConnection) -> None:
    limit = getattr(_current, "deadline", None)
    if limit is not None:
        limit.watch(connection)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _watch(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:  # a pooled connection is reused without connect()
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:  # sock is set before the TLS handshake, so a dripped handshake is cut off too
        _watch(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with connections that obey the calling thread's :class:`Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # SOCKS managers bring their own connection classes
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def watched_session(session: requests.Session | None = None) -> requests.Session:
    """``session`` (or a new one) with http(s) connections that a :class:`Deadline` can cut off."""
    session = session if session is not None else requests.Session()
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- budget -----------------------------------------------------------------------------------------------------------


class NoRoom(Exception):
    """The budget had no room for a reservation before the deadline."""


class ByteBudget:
    """Bytes that the downloads of one process may hold at once; thread-safe."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("a byte budget needs a positive capacity")
        self.capacity = capacity
        self._held = 0
        self._peak = 0
        self._room = threading.Condition()

    @property
    def held(self) -> int:
        with self._room:
            return self._held

    @property
    def peak(self) -> int:
        """The most bytes reserved at once since this budget was made (for tests and monitoring)."""
        with self._room:
            return self._peak

    @contextmanager
    def hold(self, nbytes: int, limit: Deadline) -> Iterator[None]:
        """Reserve ``nbytes`` for the block, waiting for room until ``limit``; NoRoom if none came."""
        if nbytes > self.capacity:
            raise NoRoom(f"{nbytes} bytes do not fit in a budget of {self.capacity}")
        with self._room:
            if not self._room.wait_for(lambda: self._held + nbytes <= self.capacity, timeout=limit.remaining()):
                raise NoRoom(f"no room for {nbytes} bytes within {limit.seconds:g} s")
            self._held += nbytes
            self._peak = max(self._peak, self._held)
        try:
            yield
        finally:
            with self._room:
                self._held -= nbytes
                self._room.notify_all()
