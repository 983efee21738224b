"""A policy that was not run, estimated on an experiment's logged decisions (off-policy).

``offers experiments report KEY --proposed rules|popularity|model|model:<version>`` takes each
decision of the experiment that showed an offer with a logged propensity, decides it again with
the proposed policy as ``offers evaluate`` does (``pipelines.policy_evaluation.replay``: the same
engine, the feature tables as of the invoice date, greedy), and estimates the proposed policy's
acceptance of its first offer from the logged outcomes: IPS, self-normalised IPS and doubly robust
with bootstrap 95 % intervals, and the effective sample size of the importance weights (the same
estimators, ``training.metrics.off_policy_estimates``).

It lives here, not in the report of ``serving.experiments``: the replay needs the feature tables
and the model registry, which the pipelines read, and serving may not import the pipelines
(docs/architecture.md). So the API's report has no off-policy section; the command adds one.

An estimate is only as good as the logged propensities' support for what the proposed policy
would show: where it chooses offers the logging policy rarely or never showed first, few logged
decisions carry weight, the effective sample size is small, and the report says so in words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.catalog import load_catalog
from core.columns import CUSTOMER_KEY
from core.contract import OFFER_EVENTS
from core.settings import Settings
from core.tables import ContractError, read_table
from pipelines.invoice_run.core import ChampionModels
from pipelines.invoice_run.run import load_champions
from pipelines.policy_evaluation import Replayed, first_offer_estimates, replay
from serving.decision.arbitration import Objective
from serving.decision.consent import MODEL_PREFIX
from serving.decision_log import DecisionLog
from serving.decision_log.experiments import first_offers
from serving.experiments import Experiments
from serving.fields import VARIANT_POLICY_PATTERN
from serving.scoring_model import challenger_version

PROPOSED = ("model", "rules", "popularity")
# Below this many decisions' worth of weight, the estimate is called unreliable.
MIN_EFFECTIVE_SAMPLE = 100
# Below this share of decisions where the proposed policy shows first what was logged first, the
# estimate rests on few of them.
MIN_AGREEMENT = 0.1
RESAMPLES = 300


class ProposedPolicyError(ValueError):
    """The proposed policy cannot be estimated; the message says why."""


@dataclass(frozen=True)
class Estimator:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class OffPolicyEstimate:
    """The proposed policy's acceptance of its first offer, estimated on the logged decisions."""

    proposed: str
    decisions: int
    evaluated: int
    left_out: int
    logged_acceptance: float
    agreement: float
    ips: Estimator
    snips: Estimator
    dr: Estimator
    effective_sample_size: float
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "proposed": self.proposed,
            "metric": "first_offer_acceptance",
            "decisions": self.decisions,
            "evaluated": self.evaluated,
            "left_out": self.left_out,
            "logged_acceptance": self.logged_acceptance,
            "agreement": self.agreement,
            "ips": vars(self.ips),
            "snips": vars(self.snips),
            "dr": vars(self.dr),
            "effective_sample_size": self.effective_sample_size,
            "warnings": self.warnings,
        }


def check_proposed(proposed: str) -> str:
    """The policy name, or :class:`ProposedPolicyError` naming the ones that can be proposed."""
    if proposed in PROPOSED:
        return proposed
    if proposed.startswith(MODEL_PREFIX) and re.fullmatch(VARIANT_POLICY_PATTERN, proposed):
        return proposed
    raise ProposedPolicyError(
        f"--proposed {proposed!r} is not a policy that can be estimated: one of "
        f"{', '.join(PROPOSED)} or model:<version>"
    )


def estimate_from(
    replayed: Sequence[Replayed],
    proposed: str,
    *,
    decisions: int,
    resamples: int = RESAMPLES,
) -> OffPolicyEstimate:
    """The estimate from decisions replayed with the proposed policy (its first offers under
    ``shown["model"]`` for a model, else under its own name); ``decisions``: all the
    experiment's, of which those not replayed are counted as left out."""
    if not replayed:
        raise ProposedPolicyError(
            "no logged decision of the experiment showed an offer with a logged propensity: "
            "there is nothing to estimate from"
        )
    policy = "model" if proposed.startswith("model") else proposed
    figures = first_offer_estimates(replayed, policy, resamples)
    matches = [bool(r.shown[policy]) and r.shown[policy][0] == r.logged_offer for r in replayed]
    agreement = float(np.mean(matches))
    ess = float(figures["effective_sample_size"])
    evaluated = len(replayed)
    warnings = []
    if ess == 0:
        warnings.append(
            f"Unreliable: no logged decision carries weight, since {proposed} would never show "
            "first what was shown first; IPS and SNIPS say nothing, and the doubly robust "
            "figure is the champion model's guess alone."
        )
    elif ess < MIN_EFFECTIVE_SAMPLE:
        warnings.append(
            f"Unreliable: the estimate rests on an effective sample of {ess:.0f} of "
            f"{evaluated} logged decisions (fewer than {MIN_EFFECTIVE_SAMPLE}): a few decisions "
            f"where {proposed} would show first what was logged with a small propensity carry "
            "most of the weight, so read the intervals as a rough range at best; log more "
            f"exploration, or run {proposed} as a variant."
        )
    if agreement < MIN_AGREEMENT:
        warnings.append(
            f"{proposed} would show first the offer that was shown first in only "
            f"{100 * agreement:.1f} % of the decisions; the others add nothing to IPS and SNIPS, "
            "and the doubly robust estimate fills them in from the champion model's acceptance."
        )
    if all(r.propensity >= 1.0 for r in replayed):
        warnings.append(
            "Every logged first offer had propensity 1 (no exploration was logged): the "
            "estimate sees only the decisions where the proposed policy agrees with what was "
            "shown, and cannot correct for the others."
        )

    def estimator(name: str) -> Estimator:
        found = figures[name]
        return Estimator(float(found["value"]), float(found["low"]), float(found["high"]))

    return OffPolicyEstimate(
        proposed=proposed,
        decisions=decisions,
        evaluated=evaluated,
        left_out=decisions - evaluated,
        logged_acceptance=float(np.mean([r.accepted for r in replayed])),
        agreement=agreement,
        ips=estimator("ips"),
        snips=estimator("snips"),
        dr=estimator("dr"),
        effective_sample_size=ess,
        warnings=warnings,
    )


def _earlier_events(data_dir: Path, before: pd.Timestamp) -> pd.DataFrame:
    """The offer_events input table before the experiment (popularity and the decline cap), or
    none when there is no such table."""
    try:
        events = read_table(data_dir, OFFER_EVENTS)
    except (ContractError, OSError):
        return OFFER_EVENTS.arrow_schema().empty_table().to_pandas()
    return events[pd.to_datetime(events["shown_at"], utc=True) < before]


def _models(proposed: str, settings: Settings) -> ChampionModels:
    champions = load_champions(settings)
    if not proposed.startswith(MODEL_PREFIX):
        return champions
    from training.registry import RANKER_MODEL, load_version

    if champions.churn is None:
        raise ProposedPolicyError(
            f"--proposed {proposed}: there is no churn-risk champion to serve the ranker with"
        )
    try:
        ranker = load_version(RANKER_MODEL, challenger_version(proposed), settings)
    except Exception as error:  # any failure to load means it cannot be evaluated
        raise ProposedPolicyError(
            f"--proposed {proposed}: no such offer-ranker version can be loaded from the "
            f"registry ({type(error).__name__})"
        ) from error
    return ChampionModels(ranker=ranker, churn=champions.churn)


def estimate_proposed(
    key: str,
    proposed: str,
    settings: Settings,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> OffPolicyEstimate:
    """Estimate ``proposed`` on experiment ``key``'s logged decisions; KeyError for no such
    experiment, :class:`ProposedPolicyError` when it cannot be estimated."""
    check_proposed(proposed)
    log = DecisionLog.from_settings(settings)
    try:
        experiment = Experiments(log).get(key)
        decisions, shown = first_offers(log, key)
    finally:
        log.close()
    weighed = [offer for offer in shown if offer.propensity is not None and offer.propensity > 0]
    firsts = pd.DataFrame(
        {
            "decision_id": [offer.decision_id for offer in weighed],
            CUSTOMER_KEY: [offer.customer_id for offer in weighed],
            "offer_id": [offer.offer_id for offer in weighed],
            "propensity": [offer.propensity for offer in weighed],
            "outcome": ["accepted" if offer.accepted else "ignored" for offer in weighed],
            "day": [offer.invoice_date for offer in weighed],
        }
    )
    models = _models(proposed, settings)
    replayed = replay(
        firsts,
        _earlier_events(Path(settings.data_dir), pd.Timestamp(experiment.start)),
        settings,
        load_catalog(settings.catalog),
        models,
        Objective.from_settings(settings),
        seed=seed,
    )
    return estimate_from(replayed, proposed, decisions=decisions, resamples=resamples)


def interval_text(estimator: Estimator) -> str:
    if not (math.isfinite(estimator.low) and math.isfinite(estimator.high)):
        return "–"
    return f"{100 * estimator.low:.1f} – {100 * estimator.high:.1f} %"
