"""What a fault test starts and breaks: the offers server, a private redis-server, a TCP proxy in
front of PostgreSQL, and the two cores the server and the load are pinned to."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    import redis

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "catalog" / "offers.yaml"
RENDERER_KEY = "fault-renderer-key-0123456789"
RENDERER = {"Authorization": f"Bearer {RENDERER_KEY}"}
# A cold start imports Feast, MLflow and LightGBM on one busy core: seconds, not minutes.
READY_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], bool], seconds: float, what: str, every: float = 0.05
) -> float:
    """Poll ``condition()`` until it is true; the seconds it took, or a test failure."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(every)
    return time.monotonic() - started


def require_program(name: str) -> str:
    """The path of an installed program, or a skip (a failure under OFFERS_REQUIRE_SERVICES=1)."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not installed"
    if os.environ.get("OFFERS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}, and OFFERS_REQUIRE_SERVICES=1 says it must be")
    pytest.skip(f"{message}; install it to run this fault test")
    raise AssertionError("unreachable")


# Cores ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """The CPU the server runs on and the one the load generator runs on; None: not pinned."""

    server: int | None
    load: int | None


def split_cores() -> Cores:
    """The first two CPUs this process may use, one for the server and one for the load, so that
    the load generator's own work does not show up as server latency. Unpinned with fewer."""
    if not hasattr(os, "sched_getaffinity") or shutil.which("taskset") is None:
        return Cores(None, None)
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return Cores(None, None)
    return Cores(allowed[0], allowed[1])


def pin_current_thread(cpu: int | None) -> None:
    """Pin the calling thread (only it: Linux applies pid 0 to the calling thread) to ``cpu``."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


# The offers server ------------------------------------------------------------------------------


def server_environment(values: dict[str, str]) -> dict[str, str]:
    """The server's environment: this one without any OFFERS_* or MLflow setting of the caller's
    (CI's or a developer's), the worktree on PYTHONPATH, and ``values``."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OFFERS_", "MLFLOW_"))
    }
    return {**inherited, "PYTHONPATH": str(ROOT), "OFFERS_CATALOG": str(CATALOG), **values}


def uvicorn_command(port: int) -> list[str]:
    """``uvicorn serving.app:create_app`` on ``port``, warnings and errors only."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "serving.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def offers_serve_command(port: int) -> list[str]:
    """``offers serve`` on ``port``: the console script users run."""
    script = Path(sys.executable).with_name("offers")
    if not script.exists():
        pytest.skip(f"the offers console script is not installed beside {sys.executable}")
    return [str(script), "serve", "--host", "127.0.0.1", "--port", str(port)]


class OffersServer:
    """The offers server (``command``, by default ``uvicorn serving.app:create_app``) on a port of
    its own, pinned to one core; started, killed with SIGKILL and started again on the same port.
    Everything it writes, stdout and stderr, goes to ``log_path``."""

    def __init__(
        self,
        environment: dict[str, str],
        log_path: Path,
        cpu: int | None,
        command: Callable[[int], list[str]] = uvicorn_command,
    ) -> None:
        self.environment = environment
        self.log_path = log_path
        self.cpu = cpu
        self.command = command
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, until: str = "/health/ready") -> float:
        """Start the server and wait until ``until`` answers 200 (readiness; ``/health/live`` for
        a server started on a store it cannot be ready on); the seconds that took."""
        command = _pinned(self.command(self.port), self.cpu)
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self.environment,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = started + READY_SECONDS
        while not self._answers(until):
            if self.process.poll() is not None:
                pytest.fail(f"the server exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{until} did not answer 200 within {READY_SECONDS} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        return time.monotonic() - started

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(f"{self.base_url}{path}", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no lifespan exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def log_tail(self, characters: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]

    def __enter__(self) -> OffersServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


class PreloadedServer(OffersServer):
    """The offers server forked from a process that imported its modules once
    (``tests.faults.preloaded``): each start costs the app's own start-up (stores, models,
    warm-up), not the imports. Killed with SIGKILL by its own pid, as a server is."""

    def __init__(self, environment: dict[str, str], log_path: Path, cpu: int | None) -> None:
        super().__init__(environment, log_path, cpu)
        self.zygote: subprocess.Popen[str] | None = None
        self.pid: int | None = None

    def _zygote(self) -> subprocess.Popen[str]:
        if self.zygote is None or self.zygote.poll() is not None:
            command = [sys.executable, "-m", "tests.faults.preloaded", "--port", str(self.port)]
            with self.log_path.open("ab") as log:
                self.zygote = subprocess.Popen(
                    _pinned(command, self.cpu),
                    env=self.environment,
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
            assert self.zygote.stdout is not None
            if self.zygote.stdout.readline().strip() != "preloaded":
                pytest.fail(f"the preloading process did not start:\n{self.log_tail()}")
        return self.zygote

    def start(self, until: str = "/health/ready") -> float:
        """Fork a server and wait until ``until`` answers 200; the seconds from the fork."""
        zygote = self._zygote()
        assert zygote.stdin is not None and zygote.stdout is not None
        started = time.monotonic()
        zygote.stdin.write("start\n")
        zygote.stdin.flush()
        self.pid = int(zygote.stdout.readline())
        deadline = started + READY_SECONDS
        while not self._answers(until):
            if not _alive(self.pid):
                pytest.fail(f"the server exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{until} did not answer 200 within {READY_SECONDS} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no lifespan exit."""
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        if self.pid is not None and _alive(self.pid):
            os.kill(self.pid, number)
            wait_for(lambda: not _alive(self.pid or 0), 15, "the server ended", every=0.01)
        self.pid = None

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.zygote is not None and self.zygote.poll() is None:
            assert self.zygote.stdin is not None
            with contextlib.suppress(OSError):
                self.zygote.stdin.write("exit\n")
                self.zygote.stdin.close()
            try:
                self.zygote.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.zygote.kill()
                self.zygote.wait(timeout=10)
        self.zygote = None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a process that ended but was not reaped yet is not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# A private redis-server -------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server on a port of its own, without persistence, that the test kills and starts
    again on the same port. DEBUG is enabled: Redis 7 refuses it otherwise."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "redis.log"),
        ]
        version = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=True
        ).stdout
        major = re.search(r"v=(\d+)\.", version)
        if major is not None and int(major.group(1)) >= 7:
            command += ["--enable-debug-command", "yes"]
        return command

    def start(self) -> None:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(answers, 15, "the private redis-server answers PING")
        finally:
            client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def client(self, timeout: float = 10.0) -> redis.Redis:
        import redis

        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)


# A TCP proxy that can black-hole ----------------------------------------------------------------


class BlackHoleProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``, in both directions, one thread per direction.

    ``black_hole()`` makes it keep accepting connections but read and forward nothing, on the
    connections it has and on new ones, as a server that stops answering (or a network that drops
    every packet) looks to a client; ``forward()`` lets the held bytes through again. ``cut()``
    closes every connection it carries.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def black_hole(self) -> None:
        self._forwarding.clear()

    def forward(self) -> None:
        self._forwarding.set()

    def close(self) -> None:
        self._closed.set()
        self._forwarding.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def cut(self) -> None:
        with self._lock:
            held = list(self._sockets)
            self._sockets.clear()
        for sock in held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _wait_for_forwarding(self) -> bool:
        """Block while black-holed; False once the proxy is closed."""
        while not self._forwarding.wait(0.1):
            pass
        return not self._closed.is_set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(
                target=self._connect, args=(client,), name="proxy-connect", daemon=True
            ).start()

    def _connect(self, client: socket.socket) -> None:
        # Black-holed: the connection is accepted and nothing more happens until forwarding.
        if not self._wait_for_forwarding():
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        server.settimeout(None)
        # Forward each message as it comes, as libpq does on its own socket: with Nagle's
        # algorithm a message written in parts (psycopg 3's extended protocol) waits for the
        # other side's delayed acknowledgement, 40 ms a query that no real connection pays.
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._keep(server)
        threading.Thread(
            target=self._pump, args=(server, client), name="proxy-down", daemon=True
        ).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while self._wait_for_forwarding():
                data = source.recv(65536)
                if not data:
                    break
                # Bytes read just as the black hole began are held, not sent, until forwarding.
                if not self._wait_for_forwarding():
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
