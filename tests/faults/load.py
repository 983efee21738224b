"""Paced HTTP load from a process of its own, on its own core: requests leave on a schedule
whatever the server does (none waits for an earlier answer), each recorded with the phase it was
sent in."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import multiprocessing.process
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedString
from typing import Any, cast

import httpx

from tests.faults.services import pin_current_thread

Payload = dict[str, Any]
# Forked, not spawned: the streams' payload functions are closures over the test's values.
_FORK = multiprocessing.get_context("fork")
_PHASE_BYTES = 64
STOP_POLL_S = 0.01  # how soon the load process sees stop()


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
    """Runs ``streams`` against ``base_url`` from ``start()`` to ``stop()``, from a process of its
    own on core ``cpu``.

    Open loop: a slow answer does not delay the next request, so a server that stalls shows its
    stall in the latencies instead of hiding it by slowing the load. ``phase`` labels the requests
    sent from the moment it is set. The load runs in a process forked from the test's, so that
    nothing the test's process does (its polling, starting processes, its collections) shares a
    GIL with the requests in flight: the latencies are the server's and the network's. Each
    answer goes back over a pipe, read by a thread of the test's process. The streams' payload
    functions run in the load's process, with their own copy of what they read. ``on_answer`` is
    called there too, for each answer (so that a stream can send requests about earlier answers),
    and again in the test's process as the answer arrives.
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
        self.sent: list[Sent] = []
        self._phase = cast(SynchronizedString, _FORK.Array("c", _PHASE_BYTES))
        self._stopping = _FORK.Event()
        self._answers, self._answers_writer = _FORK.Pipe(duplex=False)
        self._started = threading.Event()
        self._finished = threading.Event()
        self._failure: str | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._receiver: threading.Thread | None = None
        self.phase = "start"

    @property
    def phase(self) -> str:
        with self._phase.get_lock():
            return bytes(self._phase.value).decode()

    @phase.setter
    def phase(self, name: str) -> None:
        encoded = name.encode()
        if len(encoded) >= _PHASE_BYTES:
            raise ValueError(f"phase name {name!r} is longer than {_PHASE_BYTES - 1} bytes")
        with self._phase.get_lock():
            self._phase.value = encoded

    def start(self) -> PacedLoad:
        self._process = _FORK.Process(target=self._run, name="paced-load", daemon=True)
        self._process.start()
        self._answers_writer.close()  # the load process holds the only writer: EOF when it ends
        self._receiver = threading.Thread(target=self._receive, name="paced-load-answers")
        self._receiver.daemon = True
        self._receiver.start()
        if not self._started.wait(30):
            self._end_process()
            raise RuntimeError(f"the load generator did not start: {self._failure}")
        return self

    def stop(self) -> list[Sent]:
        """Stop sending, wait for the answers in flight (each bounded by the request timeout),
        and return every request sent."""
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.join(self.request_timeout_s + 30)
            if self._receiver.is_alive():
                self._end_process()
                raise RuntimeError("the load generator did not stop")
        self._end_process()
        if self._failure is not None:
            raise RuntimeError(f"the load generator failed:\n{self._failure}")
        return list(self.sent)

    def _end_process(self) -> None:
        if self._process is None:
            return
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)

    def _receive(self) -> None:
        """In the test's process: each answer as the load process sends it, until it ends."""
        try:
            while True:
                try:
                    message = self._answers.recv()
                except EOFError:
                    if not self._finished.is_set() and self._failure is None:
                        self._failure = "the load process ended without a word"
                    return
                if isinstance(message, Sent):
                    self.sent.append(message)
                    if self.on_answer is not None:
                        self.on_answer(message)
                elif message[0] == "started":
                    self._started.set()
                elif message[0] == "failed":
                    self._failure = message[1]
                    self._started.set()
                elif message[0] == "finished":
                    self._finished.set()
        finally:
            self._answers.close()

    def _run(self) -> None:
        """The load process: what it inherited from the test's heap is never collected again, so
        a collection here walks only the load's own objects."""
        gc.freeze()
        self._answers.close()
        pin_current_thread(self.cpu)  # the process's one thread: the whole process
        try:
            asyncio.run(self._main())
            self._answers_writer.send(("finished", None))
        except BaseException:  # reported by stop(), in the test's process
            self._answers_writer.send(("failed", traceback.format_exc()))
        finally:
            self._answers_writer.close()

    async def _main(self) -> None:
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
            self._answers_writer.send(("started", None))
            while not self._stopping.is_set():
                await asyncio.sleep(STOP_POLL_S)
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
        self._answers_writer.send(sent)
        if self.on_answer is not None:
            self.on_answer(sent)
