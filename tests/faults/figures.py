"""The figures a fault test measures: latencies and answers per phase, printed and merged into
``benchmarks/results/faults.json`` (one entry per test) for the README to quote."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.faults.load import Sent
from tests.faults.services import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "faults.json"
# A decision's steps as the server times them: ``lookup`` the decision log's look-ups, ``decide``
# the engine (feature reads included), ``log`` the decision log's write (its commit).
STEPS = ("lookup", "decide", "log")


def latency_ms(latencies_s: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max in milliseconds (None without any)."""
    if not latencies_s:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(latencies_s) * 1000.0
    return {
        "count": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


def server_latency_ms(sent: Iterable[Sent]) -> dict[str, float | int | None]:
    """The app's own time (Server-Timing) of the answers that carry it: count, p50, p99, max."""
    return latency_ms([s.server_ms / 1000.0 for s in sent if s.server_ms is not None])


def answers(sent: Iterable[Sent]) -> dict[str, int]:
    """How many requests got each status; ``no_answer``: refused, reset or timed out."""
    counts = Counter("no_answer" if s.status is None else str(s.status) for s in sent)
    return dict(sorted(counts.items()))


def degraded(sent: Sent) -> str | None:
    """The ``degraded`` field of an offers answer (None for a full answer or a non-200)."""
    if sent.status != 200:
        return None
    value = sent.json().get("degraded")
    return None if value is None else str(value)


def phase_figures(sent: Sequence[Sent], phase: str) -> dict[str, Any]:
    """Offers and live figures of the requests sent in ``phase``."""
    in_phase = [s for s in sent if s.phase == phase]
    offers = [s for s in in_phase if s.stream == "offers"]
    live = [s for s in in_phase if s.stream == "live"]
    events = [s for s in in_phase if s.stream == "events"]
    figures: dict[str, Any] = {
        "offers": {
            **latency_ms([s.latency_s for s in offers]),
            "server": server_latency_ms(offers),
            "answers": answers(offers),
            "degraded": sum(degraded(s) is not None for s in offers),
        },
        "live": latency_ms([s.latency_s for s in live]),
    }
    if events:
        figures["events"] = {
            **latency_ms([s.latency_s for s in events]),
            "answers": answers(events),
        }
    return figures


def record_figures(test: str, figures: dict[str, Any], results: Path = RESULTS) -> None:
    """Print a test's figures and merge them into the results file under its name."""
    print(f"\n{test}: {json.dumps(figures, indent=2)}")
    results.parent.mkdir(parents=True, exist_ok=True)
    try:
        stored = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    tests = stored.get("tests", {}) if isinstance(stored.get("tests"), dict) else {}
    tests[test] = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    payload = {
        "benchmark": "faults",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "tests": dict(sorted(tests.items())),
    }
    results.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


class Targets:
    """The targets a test checks, each with what was measured: all are checked before the test
    fails, so that one run reports every miss, and the results file says which were met."""

    def __init__(self) -> None:
        self.checked: dict[str, dict[str, Any]] = {}

    def check(self, name: str, met: bool, measured: Any, target: str) -> None:
        self.checked[name] = {"target": target, "measured": measured, "met": bool(met)}

    def assert_met(self) -> None:
        missed = [
            f"{name}: measured {found['measured']}, target {found['target']}"
            for name, found in self.checked.items()
            if not found["met"]
        ]
        assert not missed, "missed targets:\n" + "\n".join(missed)


def step_histogram(base_url: str) -> dict[str, dict[str, float]]:
    """The server's ``offers_step_seconds`` histogram: per step, the cumulative count per bucket
    bound (``+Inf`` the total)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10.0).text
    steps: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        found = re.match(r"offers_step_seconds_bucket\{(.*)\} ([0-9.e+-]+)$", line)
        if found is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
        steps.setdefault(labels["step"], {})[labels["le"]] = float(found.group(2))
    return steps


def steps_over_100_ms(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], step: str
) -> dict[str, int]:
    """Decisions of ``step`` between two snapshots, and how many of them took over 100 ms and
    over 1 s."""

    def between(bound: str) -> float:
        return after.get(step, {}).get(bound, 0.0) - before.get(step, {}).get(bound, 0.0)

    total = between("+Inf")
    return {
        "decisions": int(total),
        "over_100_ms": int(total - between("0.1")),
        "over_1_s": int(total - between("1.0")),
    }
