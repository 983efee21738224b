"""What the fault tests share about the offers server under load: its environment, the offers
requests they send, and how they judge the answers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from tests.factories.api import KEYS, api_settings, offers_body
from tests.faults.figures import Targets, degraded, latency_ms
from tests.faults.load import PacedLoad, Payload, Sent, Stream
from tests.faults.services import RENDERER_KEY, server_environment

LIVE_WITHIN_S = 0.100  # /health/live, judged by judge_latency
# No request may wait this long. The shortest fault here lasts 3 s, and a request that waits on
# a store waits while the fault lasts; the stalls of the whole machine these tests have met
# (0.2-0.6 s, in the server's own times and in the probes alike, in phases with a fault and
# without, with the same code passing in the next run) are shorter.
STALL_S = 1.0
# A latency bound holds for this share of a test's requests, and for the median of each phase.
# One stall of the machine holds every request in flight: at 50 offers a second, 0.6 s of it is
# 30 answers, 2-8 % of what a test judges; a fault that holds requests holds a phase's.
WITHIN_SHARE = 0.90
FEATURE_STORE_UNAVAILABLE = "feature_store_unavailable"
CUSTOMERS_WITH_OFFERS = ("C0001", "C0002", "C0003")


def store_settings(base: Path, **overrides: Any) -> Settings:
    return api_settings(base, features_dir=base / "features", feast_dir=base / "feast", **overrides)


def server_values(store: Settings, registry: dict[str, str], database_url: str) -> dict[str, str]:
    return server_environment(
        {
            **registry,
            "OFFERS_DATA_DIR": str(store.data_dir),
            "OFFERS_FEATURES_DIR": str(store.features_dir),
            "OFFERS_FEAST_DIR": str(store.feast_dir),
            "OFFERS_ONLINE_STORE": store.online_store,
            "OFFERS_DATABASE_URL": database_url,
            "OFFERS_API_KEYS": f"{RENDERER_KEY}:renderer,{KEYS['admin']}:admin",
        }
    )


def fresh_invoices(prefix: str) -> Callable[[], Payload]:
    """Offers bodies with an invoice id never asked before, for customers that get offers."""
    numbers = itertools.count(1)
    customers = itertools.cycle(CUSTOMERS_WITH_OFFERS)

    def next_body() -> Payload:
        return offers_body(invoice_id=f"{prefix}-{next(numbers)}", customer_id=next(customers))

    return next_body


def offers_stream(rate_per_s: float, prefix: str) -> Stream:
    return Stream("offers", rate_per_s, "POST", "/v1/offers", fresh_invoices(prefix))


def is_full(sent: Sent) -> bool:
    """A 200 offers answer decided on the customer's features (not degraded)."""
    return sent.stream == "offers" and sent.status == 200 and degraded(sent) is None


def offers_of(sent: Sequence[Sent], phase: str | None = None) -> list[Sent]:
    return [s for s in sent if s.stream == "offers" and (phase is None or s.phase == phase)]


def seconds_to_recovery(
    sent: Sequence[Sent], since: float, until: float, ok: Callable[[Sent], bool]
) -> float:
    """From ``since`` until the answer to the first request after which every request (in the
    order sent) was answered ``ok``, among those answered before ``until``; infinite when the
    answers never settled. Measured to the answer, so that a backlog drained after the fault
    counts as part of the recovery."""
    after = sorted(
        (s for s in sent if s.sent_at >= since and s.answered_at < until), key=lambda s: s.sent_at
    )
    last_bad = max((i for i, s in enumerate(after) if not ok(s)), default=-1)
    if last_bad + 1 >= len(after):
        return float("inf")
    return after[last_bad + 1].answered_at - since


def settled(sent: Sequence[Sent], phase: str, before: float) -> list[Sent]:
    """The offers requests sent in ``phase`` and answered before ``before``."""
    return [s for s in offers_of(sent, phase) if s.answered_at < before]


def first_ok_after(load: PacedLoad, since: float, ok: Callable[[Sent], bool]) -> Callable[[], bool]:
    def seen() -> bool:
        return any(s.sent_at >= since and ok(s) for s in list(load.sent))

    return seen


def slowest_s(sent: Sequence[Sent]) -> float:
    return max((s.latency_s for s in sent), default=0.0)


def judge_latency(
    targets: Targets, name: str, by_phase: dict[str, list[float]], within_s: float
) -> None:
    """Latencies (seconds) of one kind of request, by phase: WITHIN_SHARE of them all and the
    median of each phase within ``within_s``, none as long as STALL_S. The p99 and the slowest
    are recorded in the figures, not judged: a single stall of the machine moves them."""
    every = [latency for latencies in by_phase.values() for latency in latencies]
    if not every:
        targets.check(f"{name}: requests", False, 0, "> 0")
        return
    bound_ms, stall_ms = within_s * 1000, STALL_S * 1000
    share = round(float(np.quantile(np.asarray(every) * 1000, WITHIN_SHARE)), 1)
    targets.check(
        f"{name}: p{WITHIN_SHARE * 100:.0f} of every phase",
        share <= bound_ms,
        f"{share} ms",
        f"<= {bound_ms:.0f} ms",
    )
    for phase, latencies in by_phase.items():
        if not latencies:  # a recovery can be shorter than one request
            continue
        figures = latency_ms(latencies)
        median, slowest = figures["p50_ms"], figures["max_ms"]
        targets.check(
            f"{phase}: {name} median and slowest",
            median is not None
            and median <= bound_ms
            and slowest is not None
            and slowest < stall_ms,
            f"{median} ms, {slowest} ms",
            f"<= {bound_ms:.0f} ms, < {stall_ms:.0f} ms",
        )


def check_live(targets: Targets, sent: Sequence[Sent], phases: Iterable[str]) -> None:
    """/health/live, probed throughout, judged in ``phases``."""
    judge_latency(
        targets,
        "/health/live",
        {
            phase: [s.latency_s for s in sent if s.stream == "live" and s.phase == phase]
            for phase in phases
        },
        LIVE_WITHIN_S,
    )
