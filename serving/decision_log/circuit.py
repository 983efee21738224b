"""A deadline on every call to a decision log on another machine, and a circuit breaker.

libpq has no read timeout: a request on a pooled connection to a PostgreSQL that stops answering
(a network that drops every packet, a proxy or a server process that hangs) waits until it
answers again, and ``statement_timeout`` is enforced by a server that never receives the
statement. Keepalives and ``tcp_user_timeout`` (``database.py``) end such a connection only when
the peer's TCP stack stops acknowledging, which a hung proxy or process still does.

So each call runs on a thread of the log's own and its caller waits at most a deadline: past it,
the answer is 503 with Retry-After, not a request that hangs. After a few failures in a row (a
deadline missed, a connection refused, the pool exhausted) the circuit opens: for a short
cool-off every call is refused at once, so that no request queues behind a database that does
not answer. After it, one call probes (half-open); its success closes the circuit, its failure
opens it for another cool-off. A call stuck past its deadline keeps its thread until the
database answers or TCP gives up; it never holds a request.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

FAILURES_TO_OPEN = 3
# Errors that say the database is out of reach, not that it refused a statement: a lost or
# refused connection, a statement cancelled by statement_timeout (OperationalError), a broken
# driver state (InterfaceError), a pool with no connection to give (TimeoutError).
UNREACHABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


class DecisionLogUnavailable(sa.exc.SQLAlchemyError):
    """The decision log did not answer in time, or its circuit is open; retry after a while.

    A ``SQLAlchemyError``, so that every place that turns a database failure into a 503 (or a
    warning, in the commands) handles it as one.
    """

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class LogCircuit:
    """Runs decision-log calls with a deadline, and refuses them at once while the circuit is
    open (see the module's description)."""

    def __init__(
        self,
        *,
        deadline_s: float,
        cool_off_s: float,
        threads: int,
        failures_to_open: int = FAILURES_TO_OPEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline_s = deadline_s
        self.cool_off_s = cool_off_s
        self.failures_to_open = failures_to_open
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None  # None: closed
        self._probing = False
        self._inside = threading.local()  # a call made from within a call runs in place
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decision-log")

    @property
    def is_open(self) -> bool:
        """True while calls are refused (the cool-off, or a half-open probe under way)."""
        with self._lock:
            return self._open_until is not None

    def call(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``function(*args, **kwargs)`` within the deadline; :class:`DecisionLogUnavailable`
        past it or while the circuit is open."""
        return self.call_within(self.deadline_s, function, *args, **kwargs)

    def call_within(
        self, deadline: float, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """As :meth:`call`, with a deadline of its own (seconds)."""
        if getattr(self._inside, "active", False):
            return function(*args, **kwargs)
        probe = self._admit()
        try:
            future = self._executor.submit(self._run, functools.partial(function, *args, **kwargs))
        except RuntimeError as error:  # the log is closing
            self._release(probe)
            raise DecisionLogUnavailable("the decision log is closing", 1) from error
        try:
            return future.result(timeout=deadline)
        except FutureTimeout:
            future.cancel()  # not started yet: it never will be
            self._record(succeeded=False)
            raise DecisionLogUnavailable(
                f"the decision log did not answer within {deadline:g} s", self._retry_after()
            ) from None
        finally:
            self._release(probe)

    def _run(self, call: Callable[[], R]) -> R:
        self._inside.active = True
        try:
            result = call()
        except UNREACHABLE:
            self._record(succeeded=False)
            raise
        except Exception:
            self._record(succeeded=True)  # the database answered, with a refusal
            raise
        finally:
            self._inside.active = False
        self._record(succeeded=True)
        return result

    def _admit(self) -> bool:
        """Whether the call may go ahead, and whether it is the half-open probe; raises while
        the circuit refuses calls."""
        with self._lock:
            if self._open_until is None:
                return False
            now = self._clock()
            if now >= self._open_until and not self._probing:
                self._probing = True
                return True
            wait = max(self._open_until - now, 0.0)
        raise DecisionLogUnavailable(
            "the decision log database does not answer; calls are refused for a short while",
            max(1, math.ceil(wait)),
        )

    def _release(self, probe: bool) -> None:
        if probe:
            with self._lock:
                self._probing = False

    def _record(self, *, succeeded: bool) -> None:
        """Note an outcome: a success closes the circuit, failures in a row open it."""
        closed = opened = False
        with self._lock:
            if succeeded:
                closed = self._open_until is not None
                self._failures = 0
                self._open_until = None
            else:
                self._failures += 1
                if self._open_until is not None or self._failures >= self.failures_to_open:
                    opened = self._open_until is None
                    self._open_until = self._clock() + self.cool_off_s
            failures = self._failures
        if closed:
            logger.warning("decision log answers again: circuit closed")
        if opened:
            logger.error(
                "decision log does not answer: circuit open",
                extra={"failures": failures, "cool_off_s": self.cool_off_s},
            )

    def _retry_after(self) -> int:
        with self._lock:
            if self._open_until is None:
                return 1
            return max(1, math.ceil(self._open_until - self._clock()))

    def close(self) -> None:
        """Stop taking calls; calls stuck on a database that does not answer are not waited for."""
        self._executor.shutdown(wait=False, cancel_futures=True)
