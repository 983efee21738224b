"""``offers retrain``: validate → build features → materialize → train → evaluate → promote.

Each step is idempotent: validation and the feature build rewrite the same result from the same
input, materialization is incremental, training does not train again on data it already trained
on, the oracle check only evaluates a version it has not evaluated, and promotion only moves the
``champion`` alias when the newest version is better. A failing step raises
:class:`PipelineStepError` naming the step and the reason; the steps after it do not run, so the
champion alias is left where it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import Settings, get_settings

# The served-policy check lives with the other promotion checks, where `offers promote --version`
# applies it too; the promote step below applies it to what it has just measured.
from training.registry import served_policy_blocks

log = logging.getLogger(__name__)

STEPS = ("validate", "build_features", "materialize", "train", "evaluate", "promote")


class PipelineStepError(RuntimeError):
    """A step failed; the message is ``step <name> failed: <why>``."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step} failed: {reason}")
        self.step = step
        self.reason = reason


@dataclass
class StepReport:
    """How one step went: wall time, the process's peak memory while it ran, what it did."""

    name: str
    seconds: float
    peak_rss_mb: float
    start_rss_mb: float
    detail: str


@dataclass
class RetrainContext:
    """What the steps share."""

    data_dir: Path
    settings: Settings
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrainResult:
    """Every step's report, in order, and the promotion decisions."""

    steps: list[StepReport]
    values: dict[str, Any]

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    def describe(self) -> str:
        lines = [
            f"{step.name:<15} {step.seconds:7.1f} s  peak {step.peak_rss_mb:7.0f} MB  {step.detail}"
            for step in self.steps
        ]
        lines.append(f"{'total':<15} {self.seconds:7.1f} s")
        return "\n".join(lines)


class _PeakMemory:
    """Samples the resident memory of this process in a background thread."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


# --------------------------------------------------------------------------- the steps


def _validate(ctx: RetrainContext) -> str:
    from core.catalog import load_catalog
    from core.validation import require_valid

    catalog = load_catalog(ctx.settings.catalog)
    ctx.values["catalog"] = catalog
    # The next step writes the feature tables into that folder: the record goes there even when
    # the folder is new, so that the commands after the retrain do not check the tables again.
    report = require_valid(
        ctx.data_dir, catalog, remember_in=ctx.settings.features_dir, create_folder=True
    )
    return _first_line(report.describe())


def _build_features(ctx: RetrainContext) -> str:
    import pyarrow.parquet as pq

    from features.pipeline import build_features

    # The validate step has just checked these tables.
    written = build_features(ctx.data_dir, ctx.settings, check=False)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in written.values())
    return f"{len(written)} feature tables, {rows:,} rows, in {ctx.settings.features_dir}"


def _materialize(ctx: RetrainContext) -> str:
    from features.store import apply_repository, materialize
    from pipelines.consent_sync import sync_after_materialize

    applied = apply_repository(ctx.settings)
    report = materialize(settings=ctx.settings, show_progress=False)
    # The reload of the consent view undoes the consent changes received through the API.
    synced = sync_after_materialize(ctx.settings, ctx.data_dir)
    return f"{len(applied)} objects applied; {_first_line(report.describe())}; {synced}"


def _train(ctx: RetrainContext) -> str:
    from core.contract import OFFER_EVENTS
    from core.tables import read_table
    from pipelines.evaluation_oracle import eligibility_filter
    from training.train import train_models

    catalog = ctx.values["catalog"]
    offer_events = read_table(ctx.data_dir, OFFER_EVENTS)
    result = train_models(
        data_dir=ctx.data_dir,
        settings=ctx.settings,
        config=ctx.values.get("training_config"),
        candidate_filter=eligibility_filter(catalog, offer_events),
    )
    ctx.values["train"] = result
    return "; ".join(result.describe().splitlines())


def _evaluate(ctx: RetrainContext) -> str:
    from pipelines.evaluation_oracle import has_ground_truth, oracle_check
    from training import tracking

    result = ctx.values["train"]
    ranker = result.ranker
    figures = {name: value for name, value in ranker.metrics.items() if name.startswith("val_")}
    summary = (
        f"ranker NDCG@3 {figures.get('val_ndcg_at_3', float('nan')):.4f} "
        f"(popularity {figures.get('val_popularity_ndcg_at_3', float('nan')):.4f}, "
        f"rules {figures.get('val_rules_ndcg_at_3', float('nan')):.4f}); "
        f"churn AUC {result.churn.metrics.get('val_auc', float('nan')):.4f}"
    )
    if ranker.reused:
        kept = ranker.version.version
        if "served_model_dr" in ranker.metrics:
            return f"{summary}; version {kept} kept, its served policy evaluated before"
        # Kept from `offers train`, which does not replay the served policy: the promotion
        # gate needs that value, so it is measured now, once, on the kept version's run.
        return f"{summary}; {_served_policy(ctx)} (version {kept} kept, evaluated now)"
    served = _served_policy(ctx)
    if not has_ground_truth(ctx.data_dir) or ranker.top_offers is None:
        return f"{summary}; {served}; no simulator ground truth here, so no oracle check"
    check = oracle_check(
        ranker.top_offers, ranker.validation_frame, ctx.data_dir, ctx.values["catalog"]
    )
    ctx.values["oracle"] = check
    tracking.log_to_run(
        ranker.version.run_id,
        metrics=check.metrics(),
        text_artifacts={"evaluation/oracle.md": check.markdown()},
        settings=ctx.settings,
    )
    oracle = ", ".join(f"{k} {v:.4f}" for k, v in check.expected_acceptance.items())
    return f"{summary}; {served}; oracle expected acceptance: {oracle}"


# Logged decisions the served-policy evaluation replays during a retrain.
SERVED_SAMPLE = 2_000


def _served_policy(ctx: RetrainContext) -> str:
    """Replay the newest month with the candidate models (and the champion, if another), log the
    figures to the candidate's run, and keep both values for the promotion step."""
    from pipelines.invoice_run.core import ChampionModels
    from pipelines.invoice_run.run import load_champions
    from pipelines.policy_evaluation import (
        evaluate_served_policies,
        served_metrics,
        served_value,
    )
    from serving.decision.arbitration import Objective
    from training import tracking
    from training.registry import (
        CHAMPION_METRIC_PREFIX,
        CHURN_MODEL,
        RANKER_MODEL,
        SERVED_COMPARED_VERSION_TAG,
        SERVED_OBJECTIVE_TAG,
        load_version,
    )

    result = ctx.values["train"]
    candidate = ChampionModels(
        ranker=load_version(RANKER_MODEL, result.ranker.version.version, ctx.settings),
        churn=load_version(CHURN_MODEL, result.churn.version.version, ctx.settings),
    )
    try:
        report = evaluate_served_policies(
            ctx.settings, sample=SERVED_SAMPLE, resamples=200, ablation=False, models=candidate
        )
    except ValueError as error:  # no logged decisions with propensities to replay
        return f"served policy not evaluated ({error})"
    tracking.log_to_run(
        result.ranker.version.run_id,
        metrics=served_metrics(report),
        text_artifacts={"evaluation/served_policy.md": report.markdown()},
        settings=ctx.settings,
    )
    # What the value was measured with: a later `offers promote --version` compares it with a
    # champion's own figure only when the champion's was measured alike.
    tracking.set_version_tags(
        RANKER_MODEL,
        result.ranker.version.version,
        {SERVED_OBJECTIVE_TAG: Objective.from_settings(ctx.settings).valuation()},
        ctx.settings,
    )
    ctx.values["served_candidate"] = served_value(report)
    text = f"served policy value {served_value(report):.4f}"
    champion = load_champions(ctx.settings)
    if (
        champion.available
        and champion.ranker is not None
        and champion.model_version != candidate.model_version
    ):
        against = evaluate_served_policies(
            ctx.settings, sample=SERVED_SAMPLE, resamples=200, ablation=False, models=champion
        )
        ctx.values["served_champion"] = served_value(against)
        # The champion's figures on the same decisions, beside the candidate's: the promotion
        # gate reads them when this version is promoted later by `offers promote --version`.
        tracking.log_to_run(
            result.ranker.version.run_id,
            metrics={CHAMPION_METRIC_PREFIX + k: v for k, v in served_metrics(against).items()},
            settings=ctx.settings,
        )
        tracking.set_version_tags(
            RANKER_MODEL,
            result.ranker.version.version,
            {SERVED_COMPARED_VERSION_TAG: champion.ranker.version.rpartition("/")[2]},
            ctx.settings,
        )
        text += f" (champion {champion.model_version}: {served_value(against):.4f})"
    return text


def _promote(ctx: RetrainContext) -> str:
    from training.registry import CHURN_MODEL, RANKER_MODEL, promote_models

    blocked = served_policy_blocks(
        ctx.values.get("served_candidate"), ctx.values.get("served_champion")
    )
    if blocked is None:
        decisions = promote_models(settings=ctx.settings)
        ctx.values["promotions"] = decisions
        return "; ".join(decision.describe() for decision in decisions)
    decisions = promote_models(only=CHURN_MODEL, settings=ctx.settings)
    ctx.values["promotions"] = decisions
    kept = f"{RANKER_MODEL}: champion kept: {blocked}"
    return "; ".join([kept, *(decision.describe() for decision in decisions)])


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


Step = Callable[[RetrainContext], str]
STEP_FUNCTIONS: dict[str, Step] = {
    "validate": _validate,
    "build_features": _build_features,
    "materialize": _materialize,
    "train": _train,
    "evaluate": _evaluate,
    "promote": _promote,
}


@contextmanager
def _progress(show: bool) -> Iterator[Callable[[str], Callable[[], None]]]:
    """A rich progress display with one line per step (nothing when ``show`` is False)."""
    if not show:
        yield lambda name: lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:

        def start(name: str) -> Callable[[], None]:
            task = progress.add_task(f"{STEPS.index(name) + 1}/{len(STEPS)} {name}", total=1)
            return lambda: progress.update(task, completed=1)

        yield start


def run_retrain(
    data_dir: Path | None = None,
    settings: Settings | None = None,
    *,
    training_config: Any = None,
    show_progress: bool = True,
) -> RetrainResult:
    """Run every step in order; raise PipelineStepError at the first failure."""
    resolved = settings or get_settings()
    ctx = RetrainContext(data_dir=Path(data_dir or resolved.data_dir), settings=resolved)
    if training_config is not None:
        ctx.values["training_config"] = training_config
    reports: list[StepReport] = []
    with _progress(show_progress) as start_step:
        for name in STEPS:
            done = start_step(name)
            log.info("retrain: %s …", name)
            started = time.perf_counter()
            with _PeakMemory() as memory:
                try:
                    detail = STEP_FUNCTIONS[name](ctx)
                except PipelineStepError:
                    raise
                except Exception as error:  # any failure stops the run here, champion untouched
                    log.exception("retrain: step %s failed", name)
                    reason = _first_line(str(error)) or type(error).__name__
                    raise PipelineStepError(name, reason) from error
            report = StepReport(
                name=name,
                seconds=time.perf_counter() - started,
                peak_rss_mb=memory.peak / 2**20,
                start_rss_mb=memory.start / 2**20,
                detail=detail,
            )
            done()
            log.info("retrain: %s done in %.1f s: %s", name, report.seconds, detail)
            reports.append(report)
    result = RetrainResult(steps=reports, values=ctx.values)
    log.info("retrain finished\n%s", result.describe())
    return result
