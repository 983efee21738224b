"""An open-loop HTTP/1.1 load generator: requests leave on a fixed schedule, whatever happens.

Latency is measured from each request's scheduled send time, so a slow server cannot hide its queue
(no coordinated omission). Runs in its own process, on keep-alive connections to one host on this
machine. Bounded in requests and time; it stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    rate_per_s: float
    sent: int
    ok: int
    errors: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        srv = np.asarray(self.server_ms) if self.server_ms else np.asarray([np.nan])
        return {
            "target_rate_per_s": self.rate_per_s,
            "achieved_rate_per_s": round(self.ok / self.duration_s, 1) if self.duration_s else 0.0,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "client_p50_ms": round(float(np.percentile(lat, 50)), 3),
            "client_p99_ms": round(float(np.percentile(lat, 99)), 3),
            "client_p999_ms": round(float(np.percentile(lat, 99.9)), 3),
            "server_p50_ms": round(float(np.percentile(srv, 50)), 3),
            "server_p99_ms": round(float(np.percentile(srv, 99)), 3),
            "server_p999_ms": round(float(np.percentile(srv, 99.9)), 3),
        }


def _request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float | None]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    length = 0
    server_ms: float | None = None
    for line in header_lines:
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        elif lowered == "server-timing":
            for part in value.split(";"):
                if part.strip().startswith("dur="):
                    server_ms = float(part.strip()[4:])
    if length:
        await reader.readexactly(length)
    return status, server_ms


async def _open_loop(
    host: str,
    port: int,
    path: str,
    make_body: Callable[[int], dict[str, object]],
    headers: dict[str, str],
    rate_per_s: float,
    duration_s: float,
    connections: int,
) -> LoadResult:
    total = max(1, int(rate_per_s * duration_s))
    interval = 1.0 / rate_per_s
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    result = LoadResult(rate_per_s=rate_per_s, sent=0, ok=0, errors=0, duration_s=0.0)
    full_headers = {"Content-Type": "application/json", "Connection": "keep-alive", **headers}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                index, scheduled = item
                request = _request_bytes(
                    host, port, path, json.dumps(make_body(index)).encode(), full_headers
                )
                try:
                    writer.write(request)
                    await writer.drain()
                    status, server_ms = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    # The server closed a keep-alive connection that sat idle (uvicorn does after
                    # 5 s, which a slow rate of batch calls reaches): open another, as any HTTP
                    # client does, and send the request again; its latency still counts from the
                    # time it was due.
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(request)
                    await writer.drain()
                    status, server_ms = await _read_response(reader)
                done = time.perf_counter()
                result.latencies_ms.append((done - scheduled) * 1000.0)
                if server_ms is not None:
                    result.server_ms.append(server_ms)
                if 200 <= status < 300:
                    result.ok += 1
                else:
                    result.errors += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    for index in range(total):
        scheduled = start + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((index, scheduled))
        result.sent += 1
    for _ in workers:
        queue.put_nowait(None)
    # A saturated server must not keep the generator forever: give it a bounded grace period.
    await asyncio.wait(workers, timeout=duration_s + 30.0)
    result.duration_s = time.perf_counter() - start
    return result


def run_open_loop(
    host: str,
    port: int,
    path: str,
    make_body: Callable[[int], dict[str, object]],
    headers: dict[str, str],
    rate_per_s: float,
    duration_s: float,
    connections: int = 32,
) -> LoadResult:
    """Send ``rate_per_s × duration_s`` requests on schedule and collect their latencies."""
    return asyncio.run(
        _open_loop(host, port, path, make_body, headers, rate_per_s, duration_s, connections)
    )
