"""The served policy, evaluated: the whole engine replayed on held-back logged decisions.

``offers evaluate`` takes the logged decisions of one month (``offer_events``), and for each one
decides again with the engine the API serves, as of that decision's day, from the feature
tables: consent, eligibility, the decline cap, guardrails, the objective and the cut. Policies:

- ``model``: the champion models, as the API serves them (greedy, without exploration);
- ``rules``: the rules policy of the same engine;
- ``popularity``: among the offers the engine lets through for that invoice (eligibility and
  guardrails), the one most accepted in the logs before the month;
- ``random``: a random offer among those;
- ``acceptance``: among those, the one the champion model finds likeliest to be accepted, value
  and floors aside (what the objective and the floors cost in acceptance, next to ``model``).

Per policy it reports the share of invoices with an offer, and, against the logged outcomes, the
off-policy value of its first offer (IPS, self-normalised IPS and doubly robust with bootstrap 95 %
intervals and the effective sample size, from the logged propensities). On a simulated world it
also reports the simulator's hidden acceptance of the first offer and of the shown set, the
expected revenue change, customer saving and objective value (the served objective's weighted
revenue, retention and saving of the first offer, times its hidden acceptance; an offer the
objective values below zero counts as zero) per invoice, and the share of the achievable lift
captured: (first offer − random eligible) / (best eligible − random eligible), summed over
invoices.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.catalog import Catalog, load_catalog
from core.columns import CUSTOMER_KEY
from core.contract import OFFER_EVENTS
from core.settings import Settings, get_settings
from core.tables import read_table
from pipelines.evaluation_oracle import GROUND_TRUTH_FOLDER, has_ground_truth
from pipelines.frame_source import FrameFeatureSource, read_decision_frames, start_of_day
from pipelines.invoice_run.core import ChampionModels, feature_paths, recent_declines
from pipelines.invoice_run.run import load_champions
from serving.decision.arbitration import (
    BELOW_ACCEPTANCE_FLOOR,
    BELOW_VALUE_FLOOR,
    NO_VALUE,
    Objective,
)
from serving.decision.engine import LIFTABLE, Decision, decide
from serving.decision.inputs import DecisionRequest, UnknownCustomerError
from training.metrics import off_policy_estimates

log = logging.getLogger(__name__)

POLICIES = ("model", "rules", "popularity", "random", "acceptance")
LIFTED = "lifted:"
# Acceptance falls further down the invoice (the simulator's reading order, for the shown set).
POSITION_FACTOR = (1.0, 0.7, 0.5)
# The offers eligible for an invoice: through eligibility and the guardrails, whatever the
# objective then made of them, so that "best" and "random eligible" do not move with its weights.
_PASSED = (None, NO_VALUE, BELOW_ACCEPTANCE_FLOOR, BELOW_VALUE_FLOOR)


@dataclass
class Replayed:
    """One logged decision and what each policy would show for it."""

    decision_id: str
    customer_id: str
    day: dt.date
    logged_offer: str
    propensity: float
    accepted: bool
    passed: list[str]
    model_acceptance: dict[str, float]
    saving_sek: dict[str, float]
    value_sek: dict[str, float] = field(default_factory=dict)
    shown: dict[str, list[str]] = field(default_factory=dict)


def logged_decisions(
    data_dir: Path, month: dt.date | None, sample: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The month's logged first offers (up to ``sample`` decisions) and every earlier event.

    The month defaults to the newest one in ``offer_events``.
    """
    events = read_table(data_dir, OFFER_EVENTS)
    shown = pd.to_datetime(events["shown_at"], utc=True)
    first_day = (
        pd.Timestamp(month, tz="UTC")
        if month is not None
        else shown.max().tz_convert(None).to_period("M").to_timestamp().tz_localize("UTC")
    )
    next_month = first_day + pd.offsets.MonthBegin(1)
    in_month = (shown >= first_day) & (shown < next_month)
    firsts = events[in_month & (events["rank"] == 1)].copy()
    firsts = firsts[firsts["propensity"].notna() & (firsts["propensity"] > 0)]
    if len(firsts) > sample:
        firsts = firsts.sample(sample, random_state=seed)
    firsts["day"] = pd.to_datetime(firsts["shown_at"], utc=True).dt.date
    return firsts.sort_values(["day", "decision_id"]).reset_index(drop=True), events[
        shown < first_day
    ]


def _passed(decision: Decision) -> list[str]:
    return [record.offer_id for record in decision.candidates if record.blocked_by in _PASSED]


def replay(
    firsts: pd.DataFrame,
    earlier: pd.DataFrame,
    settings: Settings,
    catalog: Catalog,
    models: ChampionModels,
    objective: Objective,
    *,
    seed: int = 0,
    ablations: Sequence[str] = (),
) -> list[Replayed]:
    """Decide every logged decision again with each policy, day by day; and with the model
    policy once more for each rule of ``ablations`` lifted (policy ``lifted:<rule>``)."""
    paths = feature_paths(Path(settings.features_dir))
    scorer = models.scorer()
    greedy = replace(objective, exploration_share=0.0)
    popularity = _popularity(earlier)
    rng = np.random.default_rng(seed)
    replayed: list[Replayed] = []
    for key, group in firsts.groupby("day", sort=True):
        day = dt.date.fromisoformat(str(key))
        as_of = start_of_day(day)
        frames = read_decision_frames(paths, as_of, group[CUSTOMER_KEY])
        source = FrameFeatureSource.from_frames(frames, as_of)
        declined = recent_declines(
            earlier, as_of, settings.decline_cap_invoices, group[CUSTOMER_KEY]
        )
        for decision_id, customer_id, logged_offer, propensity, outcome in zip(
            group["decision_id"].astype(str),
            group[CUSTOMER_KEY].astype(str),
            group["offer_id"].astype(str),
            group["propensity"].astype(float),
            group["outcome"].astype(str),
            strict=True,
        ):
            request = DecisionRequest(
                invoice_id=f"evaluate-{decision_id}",
                customer_id=customer_id,
                invoice_date=day,
                locale="sv",
                max_offers=3,
            )
            decisions: dict[str, Decision] = {}
            try:
                for policy in ("model", "rules"):
                    decisions[policy] = decide(
                        request,
                        source,
                        catalog,
                        policy=policy,
                        scorer=scorer,
                        recently_declined=declined.get(customer_id, frozenset()),
                        objective=greedy,
                    )
                for rule in ablations:
                    decisions[LIFTED + rule] = decide(
                        request,
                        source,
                        catalog,
                        policy="model",
                        scorer=scorer,
                        recently_declined=declined.get(customer_id, frozenset()),
                        objective=greedy,
                        lifted=frozenset({rule}),
                    )
            except UnknownCustomerError:
                continue
            reference = decisions["model"]
            passed = _passed(reference)
            item = Replayed(
                decision_id=decision_id,
                customer_id=customer_id,
                day=day,
                logged_offer=logged_offer,
                propensity=float(propensity),
                accepted=outcome == "accepted",
                passed=passed,
                model_acceptance={
                    r.offer_id: r.acceptance_probability
                    for r in reference.candidates
                    if r.acceptance_probability is not None
                },
                saving_sek={
                    r.offer_id: r.customer_saving_sek_per_month or 0.0 for r in reference.candidates
                },
                value_sek={
                    r.offer_id: r.value_sek for r in reference.candidates if r.value_sek is not None
                },
            )
            item.shown["model"] = [offer.offer_id for offer in reference.offers]
            for name, decision in decisions.items():
                if name.startswith(LIFTED):
                    item.shown[name] = [offer.offer_id for offer in decision.offers]
                    for record in decision.candidates:
                        # Offers only a lifted rule let through are valued by that decision.
                        if record.value_sek is not None:
                            item.value_sek.setdefault(record.offer_id, record.value_sek)
                        if record.acceptance_probability is not None:
                            item.model_acceptance.setdefault(
                                record.offer_id, record.acceptance_probability
                            )
            item.shown["rules"] = [offer.offer_id for offer in decisions["rules"].offers]
            by_popularity = sorted(passed, key=lambda o: (-popularity.get(o, 0.0), o))
            item.shown["popularity"] = by_popularity[:1]
            item.shown["random"] = [passed[int(rng.integers(len(passed)))]] if passed else []
            scored = [o for o in passed if o in item.model_acceptance]
            # Without scores (no profiling consent) it shows what the served engine shows.
            item.shown["acceptance"] = (
                [max(scored, key=lambda o: (item.model_acceptance[o], o))]
                if scored
                else item.shown["model"][:1]
            )
            replayed.append(item)
    return replayed


def _popularity(events: pd.DataFrame) -> dict[str, float]:
    if events.empty:
        return {}
    accepted = (events["outcome"] == "accepted").groupby(events["offer_id"]).mean()
    return {str(offer): float(rate) for offer, rate in accepted.items()}


def _hidden_acceptance(
    replayed: Sequence[Replayed], data_dir: Path, catalog: Catalog
) -> dict[tuple[str, str], float]:
    """The simulator's hidden acceptance of every offer the engine let through, per decision."""
    from pipelines.simulation.oracle import expected_acceptance

    pairs = pd.DataFrame(
        [
            {
                "decision_id": r.decision_id,
                CUSTOMER_KEY: r.customer_id,
                "offer_id": o,
                "as_of": r.day,
            }
            for r in replayed
            for o in dict.fromkeys([*r.passed, *(s for shown in r.shown.values() for s in shown)])
        ]
    )
    if pairs.empty:
        return {}
    truth = expected_acceptance(
        Path(data_dir) / GROUND_TRUTH_FOLDER,
        pairs[["customer_id", "offer_id", "as_of"]],
        data_dir,
        catalog,
    )
    return {
        (d, o): float(p)
        for d, o, p in zip(pairs["decision_id"], pairs["offer_id"], truth, strict=True)
    }


@dataclass(frozen=True)
class PolicyEvaluation:
    """The report of ``offers evaluate``: per policy, the figures of the module text."""

    month: str
    decisions: int
    policies: dict[str, dict[str, Any]]
    horizon_months: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "decisions": self.decisions,
            "horizon_months": self.horizon_months,
            "policies": self.policies,
            "ablation": self.ablation(),
        }

    def markdown(self) -> str:
        lines = [
            f"Served policies on {self.decisions:,} logged decisions of {self.month}",
            "",
            "| policy | with an offer | first offer accepted (hidden) | shown set accepted "
            "(hidden) | lift captured | revenue change / invoice (SEK) | customer saving / "
            "invoice (SEK) | objective value / invoice (SEK) | IPS | SNIPS | DR (95 % interval) "
            "| ESS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        served = {n: f for n, f in self.policies.items() if not n.startswith(LIFTED)}
        for name, figures in served.items():
            dr = figures["off_policy"]["dr"]
            lines.append(
                "| {name} | {offered:.1%} | {first} | {shown} | {lift} | {revenue} | {saving} | "
                "{value} | {ips:.4f} | {snips:.4f} | {dr:.4f} ({low:.4f}–{high:.4f}) "
                "| {ess:.0f} |".format(
                    name=name,
                    offered=figures["with_offer"],
                    first=_fmt(figures.get("first_offer_acceptance")),
                    shown=_fmt(figures.get("shown_set_acceptance")),
                    lift=_fmt(figures.get("lift_captured"), percent=True),
                    revenue=_fmt(figures.get("revenue_change_sek")),
                    saving=_fmt(figures.get("customer_saving_sek")),
                    value=_fmt(figures.get("objective_value_sek")),
                    ips=figures["off_policy"]["ips"]["value"],
                    snips=figures["off_policy"]["snips"]["value"],
                    dr=dr["value"],
                    low=dr["low"],
                    high=dr["high"],
                    ess=figures["off_policy"]["effective_sample_size"],
                )
            )
        lines += self._ablation()
        return "\n".join(lines)

    def ablation(self) -> dict[str, dict[str, float | None]]:
        """Per lifted rule: the model policy's figures with it lifted, less the served ones."""
        model = self.policies.get("model", {})
        found: dict[str, dict[str, float | None]] = {}
        for name, figures in self.policies.items():
            if not name.startswith(LIFTED):
                continue
            row: dict[str, float | None] = {
                "with_offer": figures["with_offer"] - model["with_offer"]
            }
            for key in ("first_offer_acceptance", "objective_value_sek", "customer_saving_sek"):
                if figures.get(key) is not None and model.get(key) is not None:
                    row[key] = figures[key] - model[key]
            found[name[len(LIFTED) :]] = row
        return found

    def _ablation(self) -> list[str]:
        rows = self.ablation()
        if not rows:
            return []
        lines = [
            "",
            "What each rule costs: the model policy with the rule lifted, less as served",
            "",
            "| rule lifted | Δ with an offer | Δ first offer accepted (hidden) | Δ objective "
            "value / invoice (SEK) | Δ customer saving / invoice (SEK) |",
            "|---|---|---|---|---|",
        ]
        for rule, row in rows.items():
            offered = row["with_offer"] or 0.0
            lines.append(
                f"| {rule} | {offered:+.1%} | {_signed(row.get('first_offer_acceptance'))} | "
                f"{_signed(row.get('objective_value_sek'))} | "
                f"{_signed(row.get('customer_saving_sek'))} |"
            )
        return lines


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _fmt(value: float | None, *, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if percent else f"{value:.4f}"


def _figures(
    replayed: Sequence[Replayed],
    policy: str,
    hidden: Mapping[tuple[str, str], float] | None,
    horizon_months: int,
    resamples: int,
) -> dict[str, Any]:
    firsts = [r.shown[policy][0] if r.shown[policy] else None for r in replayed]
    rewards = np.array([float(r.accepted) for r in replayed])
    propensity = np.array([r.propensity for r in replayed])
    target = np.array([float(f == r.logged_offer) for f, r in zip(firsts, replayed, strict=True)])
    # The reward model of the doubly robust estimate: the champion's acceptance, 0 for no offer.
    logged_model = np.array([r.model_acceptance.get(r.logged_offer, 0.0) for r in replayed])
    target_model = np.array(
        [
            0.0 if f is None else r.model_acceptance.get(f, 0.0)
            for f, r in zip(firsts, replayed, strict=True)
        ]
    )
    figures: dict[str, Any] = {
        "with_offer": float(np.mean([f is not None for f in firsts])) if replayed else 0.0,
        "off_policy": off_policy_estimates(
            rewards, target, propensity, logged_model, target_model, resamples=resamples
        ),
    }
    if hidden is None:
        return figures
    first_p, shown_p, best, random, revenue, saving, value = [], [], [], [], [], [], []
    for first, r in zip(firsts, replayed, strict=True):
        p = hidden.get((r.decision_id, first), 0.0) if first else 0.0
        first_p.append(p)
        none_accepted = 1.0
        for position, offer in enumerate(r.shown[policy]):
            none_accepted *= 1.0 - POSITION_FACTOR[min(position, 2)] * hidden.get(
                (r.decision_id, offer), 0.0
            )
        shown_p.append(1.0 - none_accepted)
        monthly = r.saving_sek.get(first, 0.0) if first else 0.0
        revenue.append(-p * monthly * horizon_months)
        saving.append(p * monthly * horizon_months)
        value.append(p * max(r.value_sek.get(first, 0.0), 0.0) if first else 0.0)
        passed = [hidden.get((r.decision_id, o), 0.0) for o in r.passed]
        best.append(max(passed) if passed else 0.0)
        random.append(float(np.mean(passed)) if passed else 0.0)
    achievable = float(np.sum(best) - np.sum(random))
    figures.update(
        first_offer_acceptance=float(np.mean(first_p)),
        shown_set_acceptance=float(np.mean(shown_p)),
        best_eligible_acceptance=float(np.mean(best)),
        random_eligible_acceptance=float(np.mean(random)),
        lift_captured=(float(np.sum(first_p) - np.sum(random)) / achievable)
        if achievable > 0
        else None,
        revenue_change_sek=float(np.mean(revenue)),
        customer_saving_sek=float(np.mean(saving)),
        objective_value_sek=float(np.mean(value)),
    )
    return figures


def first_offer_estimates(
    replayed: Sequence[Replayed], policy: str, resamples: int
) -> dict[str, Any]:
    """IPS, SNIPS and doubly robust estimates of ``policy``'s first-offer acceptance, with
    bootstrap intervals and the effective sample size, as ``offers evaluate`` reports them."""
    figures = _figures(replayed, policy, None, horizon_months=0, resamples=resamples)
    return dict(figures["off_policy"])


def evaluate_served_policies(
    settings: Settings | None = None,
    *,
    month: dt.date | None = None,
    sample: int = 3_000,
    seed: int = 0,
    resamples: int = 300,
    ablation: bool = True,
    models: ChampionModels | None = None,
) -> PolicyEvaluation:
    """Replay the logged decisions of ``month`` with each policy and report them; with
    ``ablation``, also the model policy with each rule of ``LIFTABLE`` lifted in turn.
    ``models`` replaces the champions (a candidate before it is promoted)."""
    resolved = settings or get_settings()
    data_dir = Path(resolved.data_dir)
    catalog = load_catalog(resolved.catalog)
    objective = Objective.from_settings(resolved)
    firsts, earlier = logged_decisions(data_dir, month, sample, seed)
    if firsts.empty:
        raise ValueError(f"no logged decisions with propensities in {month or 'the newest month'}")
    models = models if models is not None else load_champions(resolved)
    ablations = sorted(LIFTABLE) if ablation and models.available else []
    replayed = replay(
        firsts, earlier, resolved, catalog, models, objective, seed=seed, ablations=ablations
    )
    hidden = _hidden_acceptance(replayed, data_dir, catalog) if has_ground_truth(data_dir) else None
    policies = {
        policy: _figures(replayed, policy, hidden, objective.horizon_months, resamples)
        for policy in (*POLICIES, *(LIFTED + rule for rule in ablations))
    }
    logged_month = str(firsts["day"].iloc[0])[:7]
    log.info("evaluated %d decisions of %s", len(replayed), logged_month)
    return PolicyEvaluation(logged_month, len(replayed), policies, objective.horizon_months)


def served_value(report: PolicyEvaluation) -> float:
    """The served model policy's value per invoice: the objective's value against the hidden
    acceptance on a simulated world, else the doubly robust value of its first offer."""
    model = report.policies["model"]
    if model.get("objective_value_sek") is not None:
        return float(model["objective_value_sek"])
    return float(model["off_policy"]["dr"]["value"])


def served_metrics(report: PolicyEvaluation) -> dict[str, float]:
    """Flat figures of each served policy, for an MLflow run."""
    metrics: dict[str, float] = {}
    for policy in POLICIES:
        figures = report.policies[policy]
        metrics[f"served_{policy}_with_offer"] = figures["with_offer"]
        metrics[f"served_{policy}_dr"] = figures["off_policy"]["dr"]["value"]
        for key in ("first_offer_acceptance", "lift_captured", "objective_value_sek"):
            if figures.get(key) is not None:
                metrics[f"served_{policy}_{key}"] = figures[key]
    return metrics
