"""Prometheus metrics of the API, in a registry of its own so that each app counts only itself."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
    consent changes by what the online store holds of them."""

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

    def observe_steps(self, timings: dict[str, float]) -> None:
        """Record seconds per step, e.g. ``{"decide": 0.0012, "log": 0.0004}``."""
        for step, seconds in timings.items():
            self.step_seconds.labels(step).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
