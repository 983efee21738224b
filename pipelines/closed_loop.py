"""The closed loop on a simulated world: the engine decides, the hidden behaviour answers, the next
model learns from what the engine logged.

A policy that trains only on its own choices can collapse onto them: offers it stops showing are
never seen again, so their acceptance is never learned again. Exploration (a share of decisions
ranked by a randomised rule, with true propensities logged) is what keeps every eligible offer in
the data. :func:`run_closed_loop` checks that on a simulated world:

1. The logging policy's events before the loop's first month train the starting model.
2. For each loop month: the current model's served policy is evaluated on that month (lift
   captured against the hidden acceptance, as ``offers evaluate`` does); the engine then decides
   that month's invoices as the API would (exploration included); the simulator's hidden
   behaviour answers each shown offer (acceptance by rank, one acceptance at most, declines and
   clicks as the simulator draws them); those events replace the logging policy's for that
   month; and the next ranker is trained on them (the churn model learns from customer months,
   which the loop does not change, so the starting one is kept).
3. The last model is evaluated on the month after the last one it learned from, against the
   starting model and against a control: the ranker trained on the same months as the last one,
   from the logging policy's own events. The first difference is the issue's verdict (which also
   holds the months of newer data the last ranker has); the second isolates what learning from
   the engine's own logs cost against learning from the logging policy's. A third comparison,
   against a *thinned* control, tells the two halves of that cost apart: the engine shows fewer
   offers than the logging policy did (its floors leave invoices without one), so its months
   hold fewer rows to learn from. The thinned control learns from the logging policy's events
   with whole decisions dropped at random until each engine month holds no more shown offers
   than the engine showed: after − thinned control is what the engine's *choice* of offers cost
   (or gained), with the amount of data held about equal.

A ranker's trees learn from its training months, and it stops early and calibrates on its tune
month; the newest ``validation_months`` (two) only validate it, and the label horizon (14 days)
before them is used by neither. So in a loop of three months or fewer the last ranker learned
nothing from the engine: it is the control's model, and the verdict is the newer months' effect in
the logging policy's data. Four months reach the tune month only; from five, the engine's first
month is in the training months (six, the bench's: June, July and 1–17 August of the engine's
logs, June and July 1–17 trained on, the rest tuned on). The loop counts the engine's shown offers
in the last ranker's training and tune months (``engine_offers_trained``, ``engine_offers_tuned``),
so a loop too short to test anything says so.

Customers' usage, bills and contracts stay those of the simulated world (they do not change with
the engine's offers): the loop tests what the data collection does to learning, not a new world.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.catalog import Catalog, load_catalog
from core.columns import CUSTOMER_KEY
from core.contract import OFFER_EVENTS, OUTCOMES
from core.settings import Settings
from core.tables import read_table
from pipelines.evaluation_oracle import GROUND_TRUTH_FOLDER, has_ground_truth
from pipelines.frame_source import FrameFeatureSource, read_decision_frames, start_of_day
from pipelines.invoice_run.core import ChampionModels, feature_paths, recent_declines
from pipelines.policy_evaluation import (
    compare_models,
    evaluate_served_policies,
    logged_decisions,
)
from serving.decision.arbitration import Objective
from serving.decision.engine import decide
from serving.decision.inputs import DecisionRequest, UnknownCustomerError

if TYPE_CHECKING:
    from training.served_model import LoadedModel
    from training.train import TrainingConfig

log = logging.getLogger(__name__)

LOOP_POLICY = "model"
# More logged decisions than a month holds: all of them.
ALL_DECISIONS = 10**9
# The events the last ranker learned from (the engine's flagged ``from_engine``), in the workdir.
LOOP_EVENTS_FILE = "loop_offer_events.parquet"
# Customers answer an offer within days; the loop dates each answer a day after the invoice.
ANSWER_DELAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class LoopMonth:
    """One month of the loop: the served policy evaluated on it, then what the engine showed."""

    month: str
    model_version: str | None
    lift_captured: float | None
    first_offer_acceptance: float | None
    decisions: int = 0
    with_offer: float = 0.0
    explored: float = 0.0
    accepted: int = 0
    distinct_first_offers: int = 0
    offers_shown: int = 0
    # The share of the month's evaluated invoices with an offer from the same model, decided on
    # the simulated world's own history (the logging policy's offers and declines): beside
    # ``with_offer`` it tells a decline the world brings (both fall) from one the loop brings.
    evaluated_with_offer: float | None = None


@dataclass(frozen=True)
class ClosedLoop:
    """The loop's months in order; the last one is evaluated only (nothing decided after it)."""

    months: tuple[LoopMonth, ...]
    training_weights: str
    # The starting model on the last month: the same invoices as the final model's figure, so the
    # two compare what the loop's learning did, not two months' different invoice mixes.
    starting_lift: float | None = None
    starting_first_offer_acceptance: float | None = None
    # The final model's captured lift less the starting model's on those invoices, with a paired
    # bootstrap 95 % interval over customers (policy_evaluation.compare_models).
    final_minus_starting: dict[str, float | None] | None = None
    # How many of the last month's invoices the two models replayed.
    compared_invoices: int = 0
    # The engine's shown offers in the last ranker's training months (0: the loop was too short
    # for the engine's logs to reach its trees; its verdict then tests nothing) and tune month.
    # Counted before the training period's sampling (TrainingConfig.max_train_rows, 400,000
    # rows; a world of the bench trains on about 150,000), so a larger world may train on fewer.
    engine_offers_trained: int = 0
    engine_offers_tuned: int = 0
    # The control: a ranker trained on the last one's months from the logging policy's events.
    control_lift: float | None = None
    final_minus_control: dict[str, float | None] | None = None
    # The thinned control: the control's events with whole decisions of each engine month
    # dropped at random until they hold no more shown offers than the engine showed that month.
    thinned_control_lift: float | None = None
    final_minus_thinned_control: dict[str, float | None] | None = None
    # Offers in the engine's months: the logging policy's (the control's) and the thinned
    # control's.
    control_offers_in_engine_months: int = 0
    thinned_control_offers_in_engine_months: int = 0

    @property
    def final_lift(self) -> float | None:
        return self.months[-1].lift_captured

    def as_dict(self) -> dict[str, Any]:
        return {
            "months": [asdict(month) for month in self.months],
            "training_weights": self.training_weights,
            "evaluated_month": self.months[-1].month,
            "starting_lift_captured": self.starting_lift,
            "starting_first_offer_acceptance": self.starting_first_offer_acceptance,
            "final_lift_captured": self.final_lift,
            "final_minus_starting_lift_captured": self.final_minus_starting,
            "compared_invoices": self.compared_invoices,
            "engine_offers_trained": self.engine_offers_trained,
            "engine_offers_tuned": self.engine_offers_tuned,
            "control_lift_captured": self.control_lift,
            "final_minus_control_lift_captured": self.final_minus_control,
            "thinned_control_lift_captured": self.thinned_control_lift,
            "final_minus_thinned_control_lift_captured": self.final_minus_thinned_control,
            "control_offers_in_engine_months": self.control_offers_in_engine_months,
            "thinned_control_offers_in_engine_months": (
                self.thinned_control_offers_in_engine_months
            ),
        }

    def markdown(self) -> str:
        lines = [
            "| month | model | lift captured (served, hidden) | first offer accepted (hidden) "
            "| decisions by the engine | with an offer | with an offer (world's history) "
            "| explored | accepted | distinct first offers |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for month in self.months:
            lift = "–" if month.lift_captured is None else f"{month.lift_captured:.1%}"
            first = (
                "–"
                if month.first_offer_acceptance is None
                else f"{month.first_offer_acceptance:.4f}"
            )
            lines.append(
                f"| {month.month} | {month.model_version or 'rules'} | {lift} | {first} | "
                f"{month.decisions:,} | {month.with_offer:.1%} | "
                f"{_percent(month.evaluated_with_offer)} | {month.explored:.1%} | "
                f"{month.accepted:,} | {month.distinct_first_offers} |"
            )
        lines.append("")
        lines.append(
            f"On {self.compared_invoices:,} invoices of {self.months[-1].month}: the starting "
            "model captures "
            f"{_percent(self.starting_lift)} of the lift, the model after the loop "
            f"{_percent(self.final_lift)}{_interval(self.final_minus_starting, 'starting')}, "
            "the control (the same months, the logging policy's events) "
            f"{_percent(self.control_lift)}{_interval(self.final_minus_control, 'control')}, "
            "the thinned control (those events, whole decisions of the engine's months dropped "
            "at random to no more shown offers than the engine showed: "
            f"{self.thinned_control_offers_in_engine_months:,} of "
            f"{self.control_offers_in_engine_months:,}) "
            f"{_percent(self.thinned_control_lift)}"
            f"{_interval(self.final_minus_thinned_control, 'thinned control')}."
        )
        lines.append(
            f"The last ranker trained on {self.engine_offers_trained:,} offers the engine showed "
            f"and tuned on {self.engine_offers_tuned:,}. Training weights: "
            f"{self.training_weights}."
        )
        return "\n".join(lines)


def _interval(difference: dict[str, float | None] | None, against: str) -> str:
    """The paired difference of the model after the loop and ``against``, as
    " (after − starting +1.23 points, 95 % interval +0.50 to +2.00)", or nothing."""
    figures = difference or {}
    if figures.get("value") is None:
        return ""
    return (
        f" (after − {against} {_points(figures.get('value'))} points, 95 % interval "
        f"{_points(figures.get('low'))} to {_points(figures.get('high'))})"
    )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _points(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.2f}"


def _month_starts(events: pd.DataFrame) -> list[dt.date]:
    return sorted({month.to_timestamp().date() for month in _months(events["shown_at"]).unique()})


def _engine_events(
    month: dt.date,
    logged: pd.DataFrame,
    earlier: pd.DataFrame,
    settings: Settings,
    models: ChampionModels,
    rng: np.random.Generator,
    data_dir: Path,
) -> tuple[pd.DataFrame, LoopMonth]:
    """The engine's decisions for the month's logged invoices, answered by the hidden behaviour."""
    catalog = load_catalog(settings.catalog)
    objective = Objective.from_settings(settings)
    scorer = models.scorer()
    paths = feature_paths(Path(settings.features_dir))
    shown_rows: list[dict[str, Any]] = []
    decided = explored = with_offer = 0
    for key, group in logged.groupby("day", sort=True):
        day = dt.date.fromisoformat(str(key))
        as_of = start_of_day(day)
        frames = read_decision_frames(paths, as_of, group[CUSTOMER_KEY])
        source = FrameFeatureSource.from_frames(frames, as_of)
        declined = recent_declines(
            earlier, as_of, settings.decline_cap_invoices, group[CUSTOMER_KEY]
        )
        for invoice_id, customer_id, shown_at in zip(
            group["invoice_id"].astype(str),
            group[CUSTOMER_KEY].astype(str),
            group["shown_at"],
            strict=True,
        ):
            request = DecisionRequest(
                invoice_id=invoice_id,
                customer_id=customer_id,
                invoice_date=day,
                locale="sv",
                max_offers=3,
            )
            try:
                decision = decide(
                    request,
                    source,
                    catalog,
                    policy=models.policy,
                    scorer=scorer,
                    recently_declined=declined.get(customer_id, frozenset()),
                    objective=objective,
                )
            except UnknownCustomerError:
                continue
            decided += 1
            explored += decision.explored
            with_offer += bool(decision.offers)
            decision_id = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | decided))
            for offer in decision.offers:
                shown_rows.append(
                    {
                        "decision_id": decision_id,
                        "invoice_id": invoice_id,
                        CUSTOMER_KEY: customer_id,
                        "offer_id": offer.offer_id,
                        "shown_at": shown_at,
                        "rank": offer.rank,
                        "policy": decision.policy,
                        "propensity": offer.propensity,
                    }
                )
    shown = pd.DataFrame(shown_rows)
    summary = LoopMonth(
        month=month.isoformat()[:7],
        model_version=models.model_version,
        lift_captured=None,
        first_offer_acceptance=None,
        decisions=decided,
        with_offer=with_offer / decided if decided else 0.0,
        explored=explored / decided if decided else 0.0,
    )
    if shown.empty:
        return shown, summary
    shown["outcome"] = hidden_outcomes(shown, data_dir, catalog, rng)
    answered = shown["outcome"] != "ignored"
    shown["outcome_at"] = pd.to_datetime(shown["shown_at"], utc=True).where(answered) + ANSWER_DELAY
    firsts = shown[shown["rank"] == 1]
    return shown, replace(
        summary,
        accepted=int((shown["outcome"] == "accepted").sum()),
        distinct_first_offers=int(firsts["offer_id"].nunique()),
        offers_shown=len(shown),
    )


def hidden_outcomes(
    shown: pd.DataFrame, data_dir: Path, catalog: Catalog, rng: np.random.Generator
) -> np.ndarray:
    """What the simulated world's hidden behaviour does with each shown offer (an outcome of
    core.contract.OUTCOMES per row of ``shown``: decision_id, customer_id, offer_id, shown_at,
    rank), as the simulator draws its own: acceptance by rank, one acceptance at most."""
    from pipelines.simulation.behaviour import CUSTOMER_TRAITS, Traits, draw_outcomes
    from pipelines.simulation.oracle import expected_acceptance

    pairs = pd.DataFrame(
        {
            CUSTOMER_KEY: shown[CUSTOMER_KEY],
            "offer_id": shown["offer_id"],
            "as_of": pd.to_datetime(shown["shown_at"], utc=True).dt.date,
        }
    )
    truth = expected_acceptance(data_dir / GROUND_TRUTH_FOLDER, pairs, data_dir, catalog)
    # One row per decision, one column per rank, as the simulator draws its own outcomes.
    codes, decisions = pd.factorize(shown["decision_id"])
    ranks = shown["rank"].to_numpy() - 1
    width = int(ranks.max()) + 1
    acceptance = np.zeros((len(decisions), width))
    is_shown = np.zeros((len(decisions), width), dtype=bool)
    acceptance[codes, ranks] = truth
    is_shown[codes, ranks] = True
    traits = pd.read_parquet(data_dir / GROUND_TRUTH_FOLDER / CUSTOMER_TRAITS.file_name)
    customers = shown.groupby(codes)[CUSTOMER_KEY].first().to_numpy()
    engagement = Traits.from_frame(traits.set_index(CUSTOMER_KEY).loc[customers]).digital_engagement
    outcome = draw_outcomes(acceptance, is_shown, engagement, rng)
    return np.asarray(OUTCOMES, dtype=object)[outcome[codes, ranks]]


def _evaluated(
    settings: Settings, month: dt.date, models: ChampionModels, sample: int, seed: int
) -> tuple[float | None, float | None, float | None]:
    """The served model policy on the month's logged invoices of the simulated world (its own
    history): lift captured, first offer acceptance, share of invoices with an offer."""
    report = evaluate_served_policies(
        settings, month=month, sample=sample, seed=seed, resamples=50, ablation=False, models=models
    )
    figures = report.policies["model"]
    return (
        figures.get("lift_captured"),
        figures.get("first_offer_acceptance"),
        figures.get("with_offer"),
    )


def _trained(work: Settings, churn: LoadedModel | None = None) -> ChampionModels:
    """A new ranker from the working tables with ``churn`` (None: a new churn model too),
    loaded as the loop's champions."""
    from training.registry import CHURN_MODEL, RANKER_MODEL, load_version
    from training.train import SkipKey, train_models, train_ranker

    if churn is None:
        result = train_models(settings=work, force=True)
        return ChampionModels(
            ranker=load_version(RANKER_MODEL, result.ranker.version.version, work),
            churn=load_version(CHURN_MODEL, result.churn.version.version, work),
        )
    folder = Path(work.data_dir)
    config = _training_config(work)
    ranker = train_ranker(folder, work, config, SkipKey.of(folder, work, config), force=True)
    return ChampionModels(
        ranker=load_version(RANKER_MODEL, ranker.version.version, work), churn=churn
    )


def _training_config(work: Settings) -> TrainingConfig:
    """The loop's rankers' training configuration (the settings' propensity weighting)."""
    from training.train import TrainingConfig

    return TrainingConfig(propensity_weight_cap=work.propensity_weight_cap)


def _periods(events: pd.DataFrame, config: TrainingConfig) -> pd.Series:
    """Each event's period (training.splits: train, tune, validation, purged) for a ranker
    trained on ``events``, split as training.data splits the ranker's rows (by ``shown_at``)."""
    from training.data import ranker_split

    times = pd.to_datetime(events["shown_at"], utc=True)
    return ranker_split(times, config.validation_months, config.tune_months).assign(times)


def run_closed_loop(
    settings: Settings,
    workdir: Path,
    *,
    months: int = 6,
    sample: int = 2_000,
    seed: int = 0,
    compared_sample: int | None = None,
) -> ClosedLoop:
    """Run the loop over the newest ``months`` months of the simulated world under
    ``settings.data_dir`` (left untouched: the loop writes its tables and models in ``workdir``).

    The first ``months - 1`` months are decided by the engine and learned from; every month is
    evaluated with the model that had learned from the months before it (up to ``sample`` logged
    decisions each). The last month's model, the starting one and the control are compared on up
    to ``compared_sample`` of its logged decisions, by default all of them: that comparison is
    the loop's verdict, and its interval narrows with every invoice it replays. Three months or
    fewer leave the engine's logs out of the last ranker's fit (see the module's docstring).
    """
    data_dir = Path(settings.data_dir)
    if not has_ground_truth(data_dir):
        raise ValueError(f"{data_dir} is not a simulated world: no hidden behaviour to answer")
    if compared_sample is not None and compared_sample < 1:
        raise ValueError(
            f"compared_sample must be at least 1 (or None: all), not {compared_sample}"
        )
    if months < 2:
        raise ValueError("the loop needs at least two months: one decided, one evaluated")
    events = read_table(data_dir, OFFER_EVENTS)
    loop_months = _month_starts(events)[-months:]
    work_data = Path(workdir) / "raw"
    shutil.copytree(data_dir, work_data, dirs_exist_ok=True)
    work = settings.model_copy(
        update={
            "data_dir": work_data,
            "mlflow_tracking_uri": f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}",
            "mlflow_artifact_root": Path(workdir) / "artifacts",
        }
    )
    shown_at = pd.to_datetime(events["shown_at"], utc=True)
    first = pd.Timestamp(loop_months[0], tz="UTC")
    last = loop_months[-1]
    # The starting model knows only the logging policy's events before the loop.
    kept = events[shown_at < first].assign(from_engine=False)
    _write_events(work_data, kept)
    rng = np.random.default_rng(seed)
    models = _trained(work)
    starting = models
    weights = _training_weights(work)
    results: list[LoopMonth] = []
    for month in loop_months[:-1]:
        lift, accepted, evaluated_with_offer = _evaluated(settings, month, models, sample, seed)
        log.info("closed loop %s: %s captures %s of the lift", month, models.model_version, lift)
        logged, _ = logged_decisions(data_dir, month, sample=ALL_DECISIONS, seed=seed)
        engine_rows, summary = _engine_events(month, logged, kept, work, models, rng, data_dir)
        results.append(
            replace(
                summary,
                lift_captured=lift,
                first_offer_acceptance=accepted,
                evaluated_with_offer=evaluated_with_offer,
            )
        )
        kept = pd.concat([kept, engine_rows.assign(from_engine=True)], ignore_index=True)
        _write_events(work_data, kept)
        models = _trained(work, churn=starting.churn)
    from training.splits import TRAIN, TUNE

    engine_periods = _periods(kept, _training_config(work))[kept["from_engine"].astype(bool)]
    kept[[*_event_columns(), "from_engine"]].to_parquet(
        Path(workdir) / LOOP_EVENTS_FILE, index=False
    )
    # The control: the last ranker's months, from the logging policy's own events.
    control_events = events[shown_at < pd.Timestamp(last, tz="UTC")]
    _write_events(work_data, control_events)
    control = _trained(work, churn=starting.churn)
    # The thinned control: as many shown offers in each engine month as the engine showed.
    thinned_events = thinned(control_events, kept[kept["from_engine"].astype(bool)], first, seed)
    _write_events(work_data, thinned_events)
    thinned_control = _trained(work, churn=starting.churn)
    # The last month: the model after the loop against the starting one and the control, on the
    # same invoices, paired.
    compare_sample = ALL_DECISIONS if compared_sample is None else compared_sample
    compared = compare_models(settings, last, models, starting, sample=compare_sample, seed=seed)
    versus_control = compare_models(
        settings, last, models, control, sample=compare_sample, seed=seed
    )
    versus_thinned = compare_models(
        settings, last, models, thinned_control, sample=compare_sample, seed=seed
    )
    (lift, start_lift), (accepted, start_accepted) = (
        compared["lift_captured"],
        compared["first_offer_acceptance"],
    )
    log.info("closed loop %s: %s captures %s of the lift", last, models.model_version, lift)
    results.append(LoopMonth(last.isoformat()[:7], models.model_version, lift, accepted))
    return ClosedLoop(
        tuple(results),
        weights,
        start_lift,
        start_accepted,
        compared["difference"],
        compared["invoices"],
        engine_offers_trained=int((engine_periods == TRAIN).sum()),
        engine_offers_tuned=int((engine_periods == TUNE).sum()),
        control_lift=versus_control["lift_captured"][1],
        final_minus_control=versus_control["difference"],
        thinned_control_lift=versus_thinned["lift_captured"][1],
        final_minus_thinned_control=versus_thinned["difference"],
        control_offers_in_engine_months=_offers_from(control_events, first),
        thinned_control_offers_in_engine_months=_offers_from(thinned_events, first),
    )


def _offers_from(events: pd.DataFrame, first: pd.Timestamp) -> int:
    return int((pd.to_datetime(events["shown_at"], utc=True) >= first).sum())


def thinned(
    logged: pd.DataFrame, engine: pd.DataFrame, first: pd.Timestamp, seed: int
) -> pd.DataFrame:
    """``logged`` (the logging policy's events) with whole decisions of each month from
    ``first`` on dropped at random until the month holds no more shown offers than ``engine``
    showed in it: the decisions are drawn in a random order and kept while their offers fit.
    Months before ``first`` are kept whole."""
    rng = np.random.default_rng(seed)
    months = _months(logged["shown_at"])
    engine_offers = _months(engine["shown_at"]).value_counts()
    keep = (months < first.tz_convert(None).to_period("M")).to_numpy()
    for month in sorted(set(months[~keep])):
        in_month = (months == month).to_numpy()
        sizes = logged.loc[in_month].groupby("decision_id", sort=True).size()
        order = rng.permutation(len(sizes))
        fits = np.cumsum(sizes.to_numpy()[order]) <= int(engine_offers.get(month, 0))
        chosen = logged["decision_id"].isin(sizes.index[order[fits]]).to_numpy()
        keep[in_month] = chosen[in_month]
    return logged[keep]


def _months(times: pd.Series) -> pd.Series:
    """The calendar month (UTC) of each moment of ``times``."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(None).dt.to_period("M")


def _event_columns() -> list[str]:
    return [column.name for column in OFFER_EVENTS.columns]


def _write_events(data_dir: Path, events: pd.DataFrame) -> None:
    events[_event_columns()].to_parquet(data_dir / OFFER_EVENTS.file_name, index=False)


def _training_weights(settings: Settings) -> str:
    cap = settings.propensity_weight_cap
    return (
        "each logged offer once (OFFERS_PROPENSITY_WEIGHT_CAP=0)"
        if cap <= 0
        else f"1 / logged propensity, clipped at {cap:g}"
    )
