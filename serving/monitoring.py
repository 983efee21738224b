"""Model monitoring over the decision log: the report ``offers monitor`` prints, and the drift
gauges each API worker keeps on ``/metrics``.

The statistics are ``training.drift``'s; this module reads the period from the decision log and
the input profile from the serving ranker's metadata. The gauges are recomputed in a thread of
their own every ``OFFERS_MONITOR_REFRESH_SECONDS`` over the last ``OFFERS_MONITOR_WINDOW_DAYS``
(at most ``OFFERS_MONITOR_MAX_DECISIONS`` decisions), never on a scrape and never on a request's
path; a computation that fails leaves the last values and is logged with its error type only.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pandas as pd
from prometheus_client.core import GaugeMetricFamily, Metric

from core.settings import Settings
from serving.decision_log.monitoring import MonitoredPeriod, monitored_period
from serving.decision_log.repository import DecisionLog
from training.drift import (
    TOO_FEW,
    DriftThresholds,
    InputProfile,
    MonitoringReport,
    degraded_share,
    input_drift,
    pooled,
    prediction_drift,
)
from training.model_inputs import MONITORED_INPUTS

logger = logging.getLogger(__name__)

NO_PROFILE_NOTE = (
    "the champion ranker carries no input profile (trained before input monitoring): input "
    "drift needs a model trained by this release (`offers train --force` trains one on the "
    "same data)"
)


def build_report(
    period: MonitoredPeriod,
    profile: InputProfile | None,
    model_version: str | None,
    thresholds: DriftThresholds,
) -> MonitoringReport:
    """Input drift, prediction drift per week and overall, and the degraded share of a period."""
    notes = []
    recent = pd.DataFrame.from_records(period.inputs, columns=MONITORED_INPUTS)
    if profile is None:
        notes.append(NO_PROFILE_NOTE)
        inputs = []
    else:
        inputs = input_drift(profile, recent, thresholds)
        if len(recent) < period.decisions_with_inputs:
            notes.append(
                f"input drift over the newest {len(recent)} of the period's "
                f"{period.decisions_with_inputs} model decisions (OFFERS_MONITOR_MAX_DECISIONS)"
            )
    if period.outcomes:
        notes.append(
            f"acceptance is compared on the offers {model_version or 'the model'} placed first "
            "(it predicts for that place); the newest week's outcomes may still be coming in"
        )
    return MonitoringReport(
        since=period.since.isoformat(),
        until=period.until.isoformat(),
        model_version=model_version,
        profile_window=None if profile is None else profile.window,
        decisions_with_inputs=period.decisions_with_inputs,
        inputs=inputs,
        weeks=prediction_drift(period.outcomes, thresholds),
        overall=pooled("all", period.outcomes, thresholds),
        degraded=degraded_share(period.answers, period.degraded, thresholds),
        thresholds=thresholds,
        notes=notes,
    )


def monitoring_report(
    log: DecisionLog,
    profile: InputProfile | None,
    model_version: str | None,
    settings: Settings,
    since: dt.datetime,
    until: dt.datetime,
) -> MonitoringReport:
    """The report of the decisions logged from ``since`` until ``until``."""
    period = monitored_period(log, since, until, settings.monitor_max_decisions, model_version)
    return build_report(period, profile, model_version, DriftThresholds.from_settings(settings))


@dataclass(frozen=True)
class DriftSnapshot:
    """The gauges' values of one computation; a figure without enough data is left out."""

    computed_at: float
    psi: Mapping[str, float]
    prediction_gap: float | None
    degraded_share: float | None

    @classmethod
    def of(cls, report: MonitoringReport, computed_at: float) -> DriftSnapshot:
        return cls(
            computed_at=computed_at,
            psi={
                drift.feature: drift.psi
                for drift in report.inputs
                if drift.psi is not None and drift.status != TOO_FEW
            },
            prediction_gap=None if report.overall.status == TOO_FEW else report.overall.gap,
            degraded_share=report.degraded.share,
        )


class DriftMonitor:
    """Keeps the drift gauges of one API worker fresh, in a thread of its own.

    ``compute`` returns the report of the window ending now; ``interval_seconds`` 0 computes
    only when :meth:`refresh` is called.
    """

    def __init__(
        self,
        compute: Callable[[], MonitoringReport],
        interval_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._compute = compute
        self.interval_seconds = interval_seconds
        self._clock = clock
        self.snapshot: DriftSnapshot | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Compute once; True when the gauges took new values, False (last values kept) when the
        computation failed."""
        try:
            report = self._compute()
        except Exception as error:  # the gauges must never take the worker down
            # The error type only: a message may quote a logged value.
            logger.error("drift gauges not refreshed", extra={"error": type(error).__name__})
            return False
        self.snapshot = DriftSnapshot.of(report, self._clock())
        return True

    def start(self) -> None:
        if self.interval_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
        self._thread.start()

    def stop(self, wait_seconds: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(wait_seconds)
            self._thread = None

    def _run(self) -> None:
        # First computation right away, then one per interval: a fresh worker shows figures
        # without waiting a whole interval.
        self.refresh()
        while not self._stopping.wait(self.interval_seconds):
            self.refresh()

    def collector(self) -> DriftCollector:
        return DriftCollector(lambda: self.snapshot)


class DriftCollector:
    """offers_input_drift_psi, offers_prediction_drift_gap, offers_degraded_share and when they
    were computed, from the monitor's latest snapshot (read once per scrape)."""

    def __init__(self, snapshot: Callable[[], DriftSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        current = self._snapshot()
        psi = GaugeMetricFamily(
            "offers_input_drift_psi",
            "Population stability index of each monitored model input in the recent model "
            "decisions against the champion ranker's training window (no sample with too few "
            "decisions or no input profile).",
            labels=["feature"],
        )
        gap = GaugeMetricFamily(
            "offers_prediction_drift_gap",
            "Observed minus predicted acceptance of the offers the model placed first, over the "
            "monitoring window (no sample with too few offers).",
        )
        degraded = GaugeMetricFamily(
            "offers_degraded_share",
            "Share of the answers in the monitoring window given without a dependency.",
        )
        computed = GaugeMetricFamily(
            "offers_drift_computed_at_seconds",
            "When the drift gauges were last computed (Unix time); no sample before the first.",
        )
        if current is not None:
            for feature, value in current.psi.items():
                psi.add_metric([feature], value)
            if current.prediction_gap is not None:
                gap.add_metric([], current.prediction_gap)
            if current.degraded_share is not None:
                degraded.add_metric([], current.degraded_share)
            computed.add_metric([], current.computed_at)
        yield psi
        yield gap
        yield degraded
        yield computed
