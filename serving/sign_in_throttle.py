"""Failed sign-ins per client address: past a limit in a window, the form refuses every key.

``POST /sign-in`` counts each key it does not know against the address the request came from.
Once an address has ``max_failures`` failures younger than ``window_seconds``, every sign-in from
it is refused (429, with ``Retry-After``) until the oldest of them leaves the window, whatever the
key: the refusal says nothing about whether a key exists, and a known key does not clear the
count (one valid key would otherwise reset guesses at another role's key).

The counts are held by each worker process, in memory: with W workers an address may fail up to
W × ``max_failures`` times a window at worst. Addresses are forgotten once their failures have all
left the window, and at most ``max_addresses`` are held (the least recently failed dropped first).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

MAX_ADDRESSES = 10_000


class SignInThrottle:
    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        if max_failures < 1 or window_seconds <= 0:
            raise ValueError("max_failures must be at least 1 and window_seconds above 0")
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again; None when it may now."""
        with self._lock:
            now = self._clock()
            failures = self._recent(address, now)
            if failures is None or len(failures) < self.max_failures:
                return None
            # The oldest failure that keeps the count at the limit leaves the window then.
            oldest = failures[len(failures) - self.max_failures]
            return max(1, math.ceil(oldest + self.window_seconds - now))

    def failed(self, address: str) -> None:
        """Count a key that was not known, from ``address``."""
        with self._lock:
            now = self._clock()
            failures = self._recent(address, now) or deque()
            failures.append(now)
            self._failures[address] = failures
            self._failures.move_to_end(address)
            while len(failures) > self.max_failures:  # older ones no longer change the answer
                failures.popleft()
            while len(self._failures) > self._max_addresses:
                self._failures.popitem(last=False)
