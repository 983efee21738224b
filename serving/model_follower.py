"""Each worker follows the registry's ``champion`` aliases on its own, within a poll interval.

``POST /v1/admin/reload`` reaches the one worker that received it; the other workers of the
process, and every other replica, learn of a promotion here. Every ``OFFERS_MODEL_POLL_SECONDS``
a thread of the worker asks the registry where the aliases of ``offer-ranker`` and ``churn-risk``
point (a lookup, no model file read). When they point elsewhere than the serving pair, or nothing
serves because the load at start failed (or there was no champion then), it loads the pair and
swaps it in through ``ModelHolder.reload``: one new object holding both models, so an answer never
mixes versions. Requests never wait for it.

A registry that does not answer, or a pair that fails to load, leaves the serving models in place;
the failure is logged, counted in ``offers_model_reload_failures_total`` and tried again at the
next poll. A pair refused for its inputs is not loaded again until an alias moves: it would be
refused every time.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable

from serving.decision.consent import MODEL_PREFIX
from serving.metrics import ApiMetrics
from serving.scoring_model import (
    ModelHolder,
    ModelLoadFailed,
    ModelMismatch,
    NoChampion,
    ServingModels,
)

logger = logging.getLogger("serving.models")

# At shutdown a load in progress is not interrupted (MLflow gives no way to); the lifespan waits
# this long for it, then leaves the daemon thread to end with the process.
STOP_WAIT_SECONDS = 5.0


class FollowOutcome(enum.StrEnum):
    """What one look at the registry did."""

    CURRENT = "current"  # the worker already serves the champions
    LOADED = "loaded"  # the champions were loaded and swapped in
    NO_CHAMPION = "no_champion"  # an alias is missing: whatever serves keeps serving
    REFUSED = "model_inputs_mismatch"  # the champions read other inputs than serving builds
    REGISTRY_UNAVAILABLE = "registry_unavailable"  # the lookup or the load failed


class ChampionFollower:
    """Keeps one worker's models on the registry's champions: one look every interval.

    ``challengers`` gives the ``model:<version>`` policies of running experiments, loaded next to
    a new champion as an admin reload does; when it fails, the challengers loaded now are kept.
    """

    def __init__(
        self,
        models: ModelHolder,
        *,
        metrics: ApiMetrics,
        challengers: Callable[[], Iterable[str]],
        interval_seconds: float,
    ) -> None:
        self.interval_seconds = interval_seconds
        self._models = models
        self._metrics = metrics
        self._challengers = challengers
        self._refused: tuple[str, str] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Look at the registry every interval from a thread of its own, until :meth:`stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._follow, name="champion-follower", daemon=True)
        self._thread.start()

    def stop(self, wait_seconds: float = STOP_WAIT_SECONDS) -> None:
        """No look after this one; waits for a load in progress at most ``wait_seconds``."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait_seconds)
            if self._thread.is_alive():
                logger.warning("champion follower still loading at shutdown; not waited for")

    def _follow(self) -> None:
        while not self._stopping.wait(self.interval_seconds):
            try:
                self.follow_once()
            except Exception as error:  # the next poll must still happen, whatever this one met
                logger.error("champion follower step failed", extra={"error": type(error).__name__})

    def follow_once(self) -> FollowOutcome:
        """Ask the registry once; load and swap in the champions when they moved. Blocks while
        it loads, so it runs off the request path (the follower's thread, or a test)."""
        try:
            ranker, churn = self._models.champion_versions()
        except ModelLoadFailed as error:
            return self._failed(FollowOutcome.REGISTRY_UNAVAILABLE, str(error))
        if ranker is None or churn is None:
            return FollowOutcome.NO_CHAMPION
        serving = self._models.current
        if (serving.model_version, serving.churn_model_version) == (ranker, churn):
            return FollowOutcome.CURRENT
        if self._refused == (ranker, churn):
            return FollowOutcome.REFUSED
        try:
            loaded = self._models.reload(self._challenger_policies(serving))
        except ModelMismatch as error:
            self._refused = (ranker, churn)
            return self._failed(FollowOutcome.REFUSED, str(error))
        except NoChampion:  # the alias was removed between the lookup and the load
            return FollowOutcome.NO_CHAMPION
        except ModelLoadFailed as error:
            return self._failed(FollowOutcome.REGISTRY_UNAVAILABLE, str(error))
        logger.info(
            "champion followed",
            extra={
                "previous_model_version": serving.model_version,
                "previous_churn_model_version": serving.churn_model_version,
                "model_version": loaded.model_version,
                "churn_model_version": loaded.churn_model_version,
            },
        )
        return FollowOutcome.LOADED

    def _challenger_policies(self, serving: ServingModels) -> list[str]:
        try:
            return list(self._challengers())
        except Exception as error:
            # The experiments live in the decision log's database; while it is away, the
            # challengers loaded now are the best guess of the ones still needed.
            logger.warning(
                "running experiments not read; the loaded challengers are kept",
                extra={"error": type(error).__name__},
            )
            return [f"{MODEL_PREFIX}{version}" for version in serving.challengers]

    def _failed(self, outcome: FollowOutcome, reason: str) -> FollowOutcome:
        self._metrics.model_reload_failures.labels(outcome.value).inc()
        # The reason names models, versions and exception types only: no customer data.
        logger.warning(
            "champion not followed; the serving models are kept",
            extra={"outcome": outcome.value, "reason": reason},
        )
        return outcome
