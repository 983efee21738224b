"""Paced HTTP load from a thread of its own, on its own core: requests leave on a schedule whatever
the server does (none waits for an earlier answer), each recorded with the phase it was sent in."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.faults.services import pin_current_thread

Payload = dict[str, Any]


@dataclass(frozen=True)
class Sent:
    """One request and what came back. Times are ``time.monotonic()`` seconds."""

    stream: str
    phase: str
    sent_at: float
    latency_s: float  # until the whole answer was read, or until the error or the client's timeout
    status: int | None  # None: no answer (refused, reset, or the client's timeout)
    body: bytes
    retry_after: str | None
    payload: Payload
    error: str | None
    server_ms: float | None = None  # the app's own time (Server-Timing), without queueing

    @property
    def answered_at(self) -> float:
        return self.sent_at + self.latency_s

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Stream:
    """Requests of one kind at a fixed rate; ``next_payload`` None skips a tick (nothing to send
    yet)."""

    name: str
    rate_per_s: float
    method: str
    path: str
    next_payload: Callable[[], Payload | None]


def _server_ms(header: str | None) -> float | None:
    """``app;dur=1.234`` → 1.234; None without the header."""
    for part in (header or "").split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    return None


def live_probes(rate_per_s: float) -> Stream:
    return Stream("live", rate_per_s, "GET", "/health/live", dict)


class PacedLoad:
    """Runs ``streams`` against ``base_url`` from ``start()`` to ``stop()``.

    Open loop: a slow answer does not delay the next request, so a server that stalls shows its
    stall in the latencies instead of hiding it by slowing the load. ``phase`` labels the requests
    sent from the moment it is set. ``on_answer`` is called in the load's thread for each answer.
    """

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        streams: list[Stream],
        *,
        cpu: int | None,
        request_timeout_s: float,
        on_answer: Callable[[Sent], None] | None = None,
    ) -> None:
        self.base_url = base_url
        self.headers = headers
        self.streams = streams
        self.cpu = cpu
        self.request_timeout_s = request_timeout_s
        self.on_answer = on_answer
        self.phase = "start"
        self.sent: list[Sent] = []
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None

    def start(self) -> PacedLoad:
        self._thread = threading.Thread(target=self._run, name="paced-load", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the load generator did not start")
        return self

    def stop(self) -> list[Sent]:
        """Stop sending, wait for the answers in flight (each bounded by the request timeout),
        and return every request sent."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(self.request_timeout_s + 30)
            if self._thread.is_alive():
                raise RuntimeError("the load generator did not stop")
        if self._failure is not None:
            raise self._failure
        return list(self.sent)

    def _run(self) -> None:
        pin_current_thread(self.cpu)
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by stop(), in the test's thread
            self._failure = error
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        in_flight: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            limits=limits,
            timeout=self.request_timeout_s + 5,  # the overall bound below is the one that counts
        ) as client:
            pacers = [
                asyncio.create_task(self._pace(client, stream, in_flight))
                for stream in self.streams
            ]
            self._started.set()
            await self._stopping.wait()
            for pacer in pacers:
                pacer.cancel()
            await asyncio.gather(*pacers, return_exceptions=True)
            if in_flight:
                await asyncio.wait(set(in_flight), timeout=self.request_timeout_s + 5)

    async def _pace(
        self, client: httpx.AsyncClient, stream: Stream, in_flight: set[asyncio.Task[None]]
    ) -> None:
        interval = 1.0 / stream.rate_per_s
        due = time.monotonic()
        while True:
            payload = stream.next_payload()
            if payload is not None:
                task = asyncio.create_task(self._send(client, stream, payload))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            due += interval
            # Behind schedule (a stalled thread): catch up rather than send fewer requests.
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _send(self, client: httpx.AsyncClient, stream: Stream, payload: Payload) -> None:
        phase = self.phase
        sent_at = time.monotonic()
        status: int | None = None
        body = b""
        retry_after: str | None = None
        error: str | None = None
        server_ms: float | None = None
        try:
            response = await asyncio.wait_for(
                client.request(stream.method, stream.path, json=payload or None),
                timeout=self.request_timeout_s,
            )
            status, body = response.status_code, response.content
            retry_after = response.headers.get("retry-after")
            server_ms = _server_ms(response.headers.get("server-timing"))
        except (httpx.HTTPError, TimeoutError, OSError) as failure:
            error = type(failure).__name__
        sent = Sent(
            stream=stream.name,
            phase=phase,
            sent_at=sent_at,
            latency_s=time.monotonic() - sent_at,
            status=status,
            body=body,
            retry_after=retry_after,
            payload=payload,
            error=error,
            server_ms=server_ms,
        )
        self.sent.append(sent)
        if self.on_answer is not None:
            self.on_answer(sent)
