"""Prometheus metrics of the API, in a registry of its own so that each app counts only itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from serving.scoring_model import ServingModels

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# From 50 µs to 1 s: a decision step is usually well under a millisecond, a cold one tens of ms.
_STEP_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class ApiMetrics:
    """Decisions by policy, degraded answers by reason, latency per step, events by type,
    consent changes by what the online store holds of them, and the serving models: their
    versions and load time, and the reloads that failed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "offers_decisions",
            "Decisions answered by POST /v1/offers, by policy (replays not counted).",
            ["policy"],
            registry=self.registry,
        )
        self.degraded = Counter(
            "offers_degraded_answers",
            "Answers given without a dependency, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "offers_step_seconds",
            "Time spent per step of an offers request.",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "offers_events",
            "Offer events stored, by type (repeats not counted).",
            ["type"],
            registry=self.registry,
        )
        self.consent_changes = Counter(
            "offers_consent_changes",
            "Consent changes stored by POST /v1/consents, by what the online store holds of "
            "them (repeats not counted).",
            ["online"],
            registry=self.registry,
        )
        self.model_reload_failures = Counter(
            "offers_model_reload_failures",
            "Model reloads (registry polls and admin reloads) that failed; the serving models "
            "were kept. By reason.",
            ["reason"],
            registry=self.registry,
        )

    def observe_steps(self, timings: dict[str, float]) -> None:
        """Record seconds per step, e.g. ``{"decide": 0.0012, "log": 0.0004}``."""
        for step, seconds in timings.items():
            self.step_seconds.labels(step).observe(seconds)

    def report_models(self, serving: Callable[[], ServingModels]) -> None:
        """Report the models ``serving()`` returns at each scrape as offers_model_loaded_at_seconds.

        Read when scraped rather than set at each swap: the sample is always the pair serving now,
        whoever swapped it in (start, the follower, an admin reload), and no old pair lingers.
        """
        self.registry.register(_ServingModelsCollector(serving))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServingModelsCollector:
    """offers_model_loaded_at_seconds of the models serving at the moment of the scrape."""

    def __init__(self, serving: Callable[[], ServingModels]) -> None:
        self._serving = serving

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "offers_model_loaded_at_seconds",
            "When the serving models were loaded (Unix time), labelled by their versions; no "
            "sample while no model serves.",
            labels=["model_version", "churn_model_version"],
        )
        current = self._serving()  # read once: the pair of one moment
        ranker, churn = current.model_version, current.churn_model_version
        if ranker is not None and churn is not None and current.loaded_at is not None:
            family.add_metric([ranker, churn], current.loaded_at)
        yield family
