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
  and floors aside (what the objective and the floors cost in acceptance, next to ``model``);
- ``peer``: the argmax-acceptance peer of ``pipelines/argmax_peer.py``, the comparison baseline,
  trained on the events before the month; it ignores the guardrails and the objective.

Per policy it reports the share of invoices with an offer, and, against the logged outcomes, the
off-policy value of its first offer (IPS, self-normalised IPS and doubly robust with bootstrap 95 %
intervals and the effective sample size, from the logged propensities). On a simulated world it
also reports the simulator's hidden acceptance of the first offer and of the shown set, the
expected revenue change, customer saving and objective value (the served objective's weighted
revenue, retention and saving of the first offer and its accepted offer value, times its hidden
acceptance; an offer the objective values below zero counts as zero) per invoice, the same value
of the money terms alone (without the accepted offer value), and the share of the achievable lift
captured: (first offer − random eligible) / (best eligible − random eligible), summed over
invoices, "eligible" being what the engine lets through for the model policy. Captured lift and
objective value carry paired bootstrap 95 % intervals resampling customers, for each policy and
for model − rules and model − peer (``paired_bootstrap``). The ablation lifts each rule in turn,
and the guardrails the peer ignores together, to say what they cost; and the gap between the peer
and the model policy with those guardrails lifted is split into what the objective's weighting
costs and what the model's acceptance estimates cost (``peer_gap``).

What if the objective were set otherwise: ``what_if`` decides the model policy again with one
setting of the objective changed at a time (``what_if_objectives``), so an operator sees what a
weight, the accepted offer value or a floor buys and costs on its own logged decisions before
changing it. Each variant is judged by the same yardsticks as the served policy: its money terms
are valued by the served objective's weights, so the figures of two variants compare.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from core.catalog import Catalog, load_catalog
from core.columns import CUSTOMER_KEY
from core.contract import OFFER_EVENTS
from core.settings import Settings, get_settings
from core.tables import read_table
from pipelines.argmax_peer import (
    GUARDRAILS_IGNORED,
    PEER_CHOOSES_FROM,
    ArgmaxPeer,
    likeliest_offers,
)
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
from serving.decision.exploration import greedy_order
from serving.decision.inputs import DecisionRequest, UnknownCustomerError
from training.metrics import off_policy_estimates

log = logging.getLogger(__name__)

POLICIES = ("model", "rules", "popularity", "random", "acceptance")
PEER = "peer"
# The same peer held to the engine's eligibility and guardrails: it chooses its likeliest offer
# among those the lift is measured against (``Replayed.passed``), so its captured lift against
# the served policy's compares the two orders under the same rules.
PEER_WITHIN_GUARDRAILS = "peer_within_guardrails"
LIFTED = "lifted:"
# The model policy decided with one setting of the objective changed: "what-if:<setting>=<value>".
WHAT_IF = "what-if:"
# The objective's settings a what-if may change (exploration is off in every replay).
WHAT_IF_SETTINGS = (
    "weight_revenue",
    "weight_retention",
    "weight_customer",
    "accepted_offer_value_sek",
    "horizon_months",
    "churn_reduction",
    "min_acceptance",
    "min_value_sek",
    "upgrade_usage_share",
    "value_tolerance",
)
# Ablations of several rules at once: every block the argmax peer ignores, lifted together.
LIFTED_SETS: dict[str, tuple[str, ...]] = {"guardrails": GUARDRAILS_IGNORED}
# The paired comparisons: the served model policy less each of these, per customer resample.
PAIRED = (("model", "rules"), ("model", PEER), ("model", PEER_WITHIN_GUARDRAILS))
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
    # What the argmax peer may choose from: eligible, whatever the guardrails and the objective
    # made of it (pipelines/argmax_peer.py); and whether the engine decided with personal features.
    eligible: list[str] = field(default_factory=list)
    profiled: bool = False


def what_if_objectives(
    objective: Objective, changes: Mapping[str, Sequence[float]]
) -> dict[str, Objective]:
    """The objective with one setting changed at a time, named ``what-if:<setting>=<value>``, in
    the order given. Raises ``ValueError`` naming a setting that is not one of
    ``WHAT_IF_SETTINGS``, or a value its setting refuses (as ``OFFERS_<SETTING>`` would be)."""
    variants: dict[str, Objective] = {}
    for setting, values in changes.items():
        if setting not in WHAT_IF_SETTINGS:
            raise ValueError(
                f"{setting!r} is not a setting of the objective; one of: "
                + ", ".join(WHAT_IF_SETTINGS)
            )
        declared = Settings.model_fields[setting]
        checker: TypeAdapter[Any] = TypeAdapter(
            Annotated[(declared.annotation, *declared.metadata)]  # type: ignore[arg-type]
        )
        for value in values:
            try:
                checked = checker.validate_python(value)
            except ValidationError as error:
                reason = error.errors()[0]["msg"]
                raise ValueError(f"{setting}={value:g}: {reason}") from None
            # Named by the value exactly (600, 0.05, 1234567.5): two values never share a name,
            # and a value given twice is one what-if.
            exact = float(value)
            shown = str(int(exact)) if exact.is_integer() and abs(exact) < 1e15 else repr(exact)
            variants[f"{WHAT_IF}{setting}={shown}"] = replace(objective, **{setting: checked})
    return variants


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
    what_if: Mapping[str, Objective] | None = None,
) -> list[Replayed]:
    """Decide every logged decision again with each policy, day by day; and with the model
    policy once more for each rule of ``ablations`` lifted (policy ``lifted:<rule>``; a name of
    ``LIFTED_SETS`` lifts its rules together) and for each objective of ``what_if`` (policy
    named by its key)."""
    variants = {
        name: replace(other, exploration_share=0.0) for name, other in (what_if or {}).items()
    }
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
                        lifted=frozenset(LIFTED_SETS.get(rule, (rule,))),
                    )
                for name, variant in variants.items():
                    decisions[name] = decide(
                        request,
                        source,
                        catalog,
                        policy="model",
                        scorer=scorer,
                        recently_declined=declined.get(customer_id, frozenset()),
                        objective=variant,
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
                eligible=[
                    r.offer_id for r in reference.candidates if r.blocked_by in PEER_CHOOSES_FROM
                ],
                profiled=reference.policy == "model",
            )
            item.shown["model"] = [offer.offer_id for offer in reference.offers]
            for name, decision in decisions.items():
                if name.startswith((LIFTED, WHAT_IF)):
                    item.shown[name] = [offer.offer_id for offer in decision.offers]
                    for record in decision.candidates:
                        # Offers only a lifted rule (or a what-if's usage share) let through are
                        # valued by that decision; the others keep the served objective's value.
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
            for o in dict.fromkeys(
                [*r.passed, *r.eligible, *(s for shown in r.shown.values() for s in shown)]
            )
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
    # paired_bootstrap's intervals, on a simulated world
    paired: dict[str, Any] = field(default_factory=dict)
    # peer_gap's split of the peer's lead over the model policy with the guardrails lifted
    gap: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "decisions": self.decisions,
            "horizon_months": self.horizon_months,
            "policies": self.policies,
            "ablation": self.ablation(),
            "what_if": self.what_if(),
            "paired": self.paired,
            "peer": self.peer(),
        }

    def peer(self) -> dict[str, Any]:
        """The served model policy against the argmax peer: the peer's captured lift, what the
        guardrails it ignores cost the served policy in captured lift when lifted together (and
        one at a time, summed), and whether the served policy captures at least the peer's lift
        less that cost (a negative cost counts as none); and the peer held to the same
        guardrails (``PEER_WITHIN_GUARDRAILS``) beside the served policy."""
        model, peer = self.policies.get("model", {}), self.policies.get(PEER, {})
        guarded = self.policies.get(PEER_WITHIN_GUARDRAILS, {})
        lifted = self.policies.get(LIFTED + "guardrails", {})
        if model.get("lift_captured") is None or peer.get("lift_captured") is None:
            return {}
        cost = None
        if lifted.get("lift_captured") is not None:
            cost = lifted["lift_captured"] - model["lift_captured"]
        one_at_a_time = [
            self.policies[LIFTED + rule]["lift_captured"] - model["lift_captured"]
            for rule in GUARDRAILS_IGNORED
            if self.policies.get(LIFTED + rule, {}).get("lift_captured") is not None
        ]
        return {
            "ignores": list(GUARDRAILS_IGNORED),
            "peer_lift_captured": peer["lift_captured"],
            "peer_lift_captured_of_its_candidates": peer.get("lift_captured_of_its_candidates"),
            "model_lift_captured": model["lift_captured"],
            "guardrails_cost_lift_captured": cost,
            "guardrails_cost_one_at_a_time_summed": float(np.sum(one_at_a_time))
            if one_at_a_time
            else None,
            "model_at_least_peer_less_cost": None
            if cost is None
            else model["lift_captured"] >= peer["lift_captured"] - max(cost, 0.0),
            "peer_within_guardrails_lift_captured": guarded.get("lift_captured"),
            "model_at_least_peer_within_guardrails": None
            if guarded.get("lift_captured") is None
            else model["lift_captured"] >= guarded["lift_captured"],
            "gap_with_guardrails_lifted": self.gap or None,
        }

    def markdown(self) -> str:
        lines = [
            f"Served policies on {self.decisions:,} logged decisions of {self.month}",
            "",
            "| policy | with an offer | first offer accepted (hidden) | shown set accepted "
            "(hidden) | lift captured (95 % interval) | revenue change / invoice (SEK) | "
            "customer saving / invoice (SEK) | objective value / invoice (SEK) | of which money "
            "terms (SEK) | IPS | SNIPS | DR (95 % interval) | ESS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        served = {n: f for n, f in self.policies.items() if not n.startswith((LIFTED, WHAT_IF))}
        intervals = self.paired.get("lift_captured", {})
        for name, figures in served.items():
            dr = figures["off_policy"]["dr"]
            lift = _fmt(figures.get("lift_captured"), percent=True)
            if intervals.get(name, {}).get("low") is not None:
                lift += " ({:.1%}–{:.1%})".format(intervals[name]["low"], intervals[name]["high"])
            lines.append(
                "| {name} | {offered:.1%} | {first} | {shown} | {lift} | {revenue} | {saving} | "
                "{value} | {money} | {ips:.4f} | {snips:.4f} | {dr:.4f} ({low:.4f}–{high:.4f}) "
                "| {ess:.0f} |".format(
                    name=name,
                    offered=figures["with_offer"],
                    first=_fmt(figures.get("first_offer_acceptance")),
                    shown=_fmt(figures.get("shown_set_acceptance")),
                    lift=lift,
                    revenue=_fmt(figures.get("revenue_change_sek")),
                    saving=_fmt(figures.get("customer_saving_sek")),
                    value=_fmt(figures.get("objective_value_sek")),
                    money=_fmt(figures.get("money_terms_value_sek")),
                    ips=figures["off_policy"]["ips"]["value"],
                    snips=figures["off_policy"]["snips"]["value"],
                    dr=dr["value"],
                    low=dr["low"],
                    high=dr["high"],
                    ess=figures["off_policy"]["effective_sample_size"],
                )
            )
        lines += self._paired()
        lines += self._ablation()
        lines += self._what_if()
        return "\n".join(lines)

    def _paired(self) -> list[str]:
        differences = self.paired.get("differences", {})
        lines = []
        if differences:
            lines += [
                "",
                f"Paired differences, bootstrap 95 % intervals over {self.paired['customers']:,} "
                f"customers ({self.paired['resamples']:,} resamples)",
                "",
                "| difference | Δ lift captured | Δ objective value / invoice (SEK) | beyond the "
                "interval |",
                "|---|---|---|---|",
            ]
            for name, row in differences.items():
                lift, value = row["lift_captured"], row["objective_value_sek"]
                lines.append(
                    f"| {name.replace('-', ' − ')} | {_ranged(lift, percent=True)} | "
                    f"{_ranged(value)} | {'yes' if row['beats_beyond_interval'] else 'no'} |"
                )
        peer = self.peer()
        if peer:
            cost = peer["guardrails_cost_lift_captured"]
            lines += [
                "",
                f"Argmax peer (ignores {', '.join(peer['ignores'])}): lift captured "
                f"{peer['peer_lift_captured']:.1%} of the engine's eligible lift"
                + (
                    ""
                    if peer["peer_lift_captured_of_its_candidates"] is None
                    else f" ({peer['peer_lift_captured_of_its_candidates']:.1%} of its own)"
                )
                + f"; the served model policy {peer['model_lift_captured']:.1%}; those guardrails"
                " lifted together change the served policy's captured lift by "
                + ("–" if cost is None else f"{cost:+.1%}")
                + "; served ≥ peer − cost: "
                + (
                    "–"
                    if cost is None
                    else ("yes" if peer["model_at_least_peer_less_cost"] else "no")
                )
                + "; the peer held to the same guardrails "
                + _fmt(peer["peer_within_guardrails_lift_captured"], percent=True),
            ]
        if self.gap:
            gap, lifts = self.gap, self.gap["lift_captured"]
            lines += [
                "",
                f"The peer's lead over the model policy with those guardrails lifted, "
                f"{gap['gap']:+.1%}: the objective's weighting {gap['objective_weighting']:+.1%} "
                f"(the objective's order with the hidden acceptance, its value tolerance "
                f"included, captures {lifts['hidden_value_order']:.1%}),"
                f" the model's acceptance estimates {gap['acceptance_estimates']:+.1%}, invoices "
                f"the model does not decide {gap['undecided_by_the_model']:+.1%}; the model's "
                f"likeliest offer among the peer's candidates captures "
                f"{lifts['model_likeliest']:.1%} (the hidden best on "
                f"{gap['likeliest_is_hidden_best']['model']:.1%} of the invoices, the peer's on "
                f"{gap['likeliest_is_hidden_best']['peer']:.1%})",
            ]
        return lines

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
            for key in (
                "first_offer_acceptance",
                "lift_captured",
                "objective_value_sek",
                "money_terms_value_sek",
                "customer_saving_sek",
            ):
                if figures.get(key) is not None and model.get(key) is not None:
                    row[key] = figures[key] - model[key]
            found[name[len(LIFTED) :]] = row
        return found

    def what_if(self) -> dict[str, dict[str, Any]]:
        """Per what-if (``<setting>=<value>``): the model policy's figures decided with that
        setting, as absolute figures beside the served ones (``served``); empty without any."""
        changed = {
            name[len(WHAT_IF) :]: figures
            for name, figures in self.policies.items()
            if name.startswith(WHAT_IF)
        }
        if not changed or "model" not in self.policies:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for name, figures in {"served": self.policies["model"], **changed}.items():
            found[name] = {
                key: figures.get(key)
                for key in (
                    "with_offer",
                    "first_offer_acceptance",
                    "lift_captured",
                    "money_terms_value_sek",
                    "customer_saving_sek",
                    "revenue_change_sek",
                )
            }
            found[name]["dr"] = figures["off_policy"]["dr"]["value"]
        return found

    def _what_if(self) -> list[str]:
        rows = self.what_if()
        if not rows:
            return []
        lines = [
            "",
            "What if one setting of the objective were otherwise: the model policy decided with "
            "it, its money terms valued by the served objective",
            "",
            "| objective | with an offer | first offer accepted (hidden) | lift captured | money "
            "terms / invoice (SEK) | customer saving / invoice (SEK) | revenue change / invoice "
            "(SEK) | DR |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            lines.append(
                f"| {'as served' if name == 'served' else name} | {row['with_offer']:.1%} | "
                f"{_fmt(row['first_offer_acceptance'])} | "
                f"{_fmt(row['lift_captured'], percent=True)} | "
                f"{_fmt(row['money_terms_value_sek'])} | {_fmt(row['customer_saving_sek'])} | "
                f"{_fmt(row['revenue_change_sek'])} | {row['dr']:.4f} |"
            )
        return lines

    def _ablation(self) -> list[str]:
        rows = self.ablation()
        if not rows:
            return []
        lines = [
            "",
            "What each rule costs: the model policy with the rule lifted, less as served",
            "",
            "| rule lifted | Δ with an offer | Δ first offer accepted (hidden) | Δ lift captured "
            "| Δ objective value / invoice (SEK) | Δ customer saving / invoice (SEK) |",
            "|---|---|---|---|---|---|",
        ]
        for rule, row in rows.items():
            offered = row["with_offer"] or 0.0
            lift = row.get("lift_captured")
            lines.append(
                f"| {rule} | {offered:+.1%} | {_signed(row.get('first_offer_acceptance'))} | "
                f"{'–' if lift is None else format(lift, '+.1%')} | "
                f"{_signed(row.get('objective_value_sek'))} | "
                f"{_signed(row.get('customer_saving_sek'))} |"
            )
        return lines


def _ranged(interval: Mapping[str, float | None], *, percent: bool = False) -> str:
    value, low, high = interval["value"], interval["low"], interval["high"]
    if value is None or low is None or high is None:
        return "–"
    shown = "{:+.1%}" if percent else "{:+.2f}"
    return f"{shown.format(value)} ({shown.format(low)} to {shown.format(high)})"


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
    accepted_offer_value_sek: float = 0.0,
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
    per = per_invoice(replayed, policy, hidden, accepted_offer_value_sek)
    achievable = float(np.sum(per["best"]) - np.sum(per["random"]))
    figures.update(
        first_offer_acceptance=float(np.mean(per["first"])),
        shown_set_acceptance=float(np.mean(per["shown"])),
        best_eligible_acceptance=float(np.mean(per["best"])),
        random_eligible_acceptance=float(np.mean(per["random"])),
        lift_captured=(float(np.sum(per["first"]) - np.sum(per["random"])) / achievable)
        if achievable > 0
        else None,
        revenue_change_sek=float(np.mean(-per["saving"] * horizon_months)),
        customer_saving_sek=float(np.mean(per["saving"] * horizon_months)),
        objective_value_sek=float(np.mean(per["value"])),
        money_terms_value_sek=float(np.mean(per["money"])),
    )
    return figures


def per_invoice(
    replayed: Sequence[Replayed],
    policy: str,
    hidden: Mapping[tuple[str, str], float],
    accepted_offer_value_sek: float = 0.0,
) -> dict[str, np.ndarray]:
    """Per invoice, against the hidden acceptance: ``first`` (acceptance of the policy's first
    offer), ``shown`` (of its shown set), ``best`` and ``random`` (of the best and of a random
    eligible offer), ``saving`` (the first offer's expected monthly saving), ``value`` (its
    objective value times acceptance, 0 for an offer the objective values below zero) and
    ``money`` (the same without the objective's accepted offer value: its weighted revenue,
    retention and saving alone)."""
    columns: dict[str, list[float]] = {
        key: [] for key in ("first", "shown", "best", "random", "saving", "value", "money")
    }
    for r in replayed:
        first = r.shown[policy][0] if r.shown[policy] else None
        p = hidden.get((r.decision_id, first), 0.0) if first else 0.0
        columns["first"].append(p)
        none_accepted = 1.0
        for position, offer in enumerate(r.shown[policy]):
            none_accepted *= 1.0 - POSITION_FACTOR[min(position, 2)] * hidden.get(
                (r.decision_id, offer), 0.0
            )
        columns["shown"].append(1.0 - none_accepted)
        columns["saving"].append(p * r.saving_sek.get(first, 0.0) if first else 0.0)
        value = max(r.value_sek.get(first, 0.0), 0.0) if first else 0.0
        columns["value"].append(p * value)
        # A positive value holds the accepted offer value on top of positive money terms.
        columns["money"].append(p * max(value - accepted_offer_value_sek, 0.0))
        passed = [hidden.get((r.decision_id, o), 0.0) for o in r.passed]
        columns["best"].append(max(passed) if passed else 0.0)
        columns["random"].append(float(np.mean(passed)) if passed else 0.0)
    return {key: np.asarray(values, dtype=float) for key, values in columns.items()}


def _interval(point: float, draws: np.ndarray) -> dict[str, float | None]:
    finite = draws[np.isfinite(draws)]
    if not np.isfinite(point) or finite.size == 0:
        return {"value": None, "low": None, "high": None}
    low, high = np.percentile(finite, [2.5, 97.5])
    return {"value": float(point), "low": float(low), "high": float(high)}


def paired_bootstrap(
    replayed: Sequence[Replayed],
    hidden: Mapping[tuple[str, str], float],
    policies: Sequence[str],
    pairs: Sequence[tuple[str, str]] = PAIRED,
    *,
    resamples: int = 1_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Bootstrap 95 % intervals of each policy's captured lift and objective value per invoice,
    and of the differences ``pairs`` (a − b), from the same resamples of customers.

    The resampled unit is the customer (a customer's invoices stay together, so invoices of one
    customer are not counted as independent); each resample draws as many customers as there are,
    with replacement, and every policy and difference is computed on that same draw. Captured
    lift is a ratio of sums, recomputed on each draw; intervals are the 2.5th and 97.5th
    percentiles. ``beats_beyond_interval`` of a pair: the interval of a − b in captured lift lies
    above 0.
    """
    if not replayed:
        raise ValueError("no replayed decisions to resample")
    weights, customers = _customer_resamples(replayed, resamples, seed)
    arrays = {policy: per_invoice(replayed, policy, hidden) for policy in policies}
    # One replay: every policy is measured against the same eligible offers, the first's.
    reference = arrays[policies[0]]
    lift = {p: _lift_draws(weights, {**reference, "first": a["first"]}) for p, a in arrays.items()}
    value = {p: (weights @ a["value"]) / weights.sum(axis=1) for p, a in arrays.items()}
    differences = {}
    for a, b in pairs:
        if a not in arrays or b not in arrays:
            continue
        lift_difference = _interval(lift[a][0] - lift[b][0], (lift[a] - lift[b])[1:])
        differences[f"{a}-{b}"] = {
            "lift_captured": lift_difference,
            "objective_value_sek": _interval(value[a][0] - value[b][0], (value[a] - value[b])[1:]),
            "beats_beyond_interval": bool((lift_difference["low"] or 0.0) > 0.0),
        }
    return {
        "resampled": "customers",
        "customers": customers,
        "resamples": resamples,
        "lift_captured": {p: _interval(d[0], d[1:]) for p, d in lift.items()},
        "objective_value_sek": {p: _interval(d[0], d[1:]) for p, d in value.items()},
        "differences": differences,
    }


def _customer_resamples(
    replayed: Sequence[Replayed], resamples: int, seed: int
) -> tuple[np.ndarray, int]:
    """Per resample, each invoice's weight: its customer's count in a draw of as many customers
    as there are, with replacement (row 0: the sample itself, every weight 1); and the number of
    customers."""
    if resamples < 2:
        raise ValueError(f"resamples must be at least 2, not {resamples}")
    codes, customers = pd.factorize(pd.Series([r.customer_id for r in replayed]))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(
        len(customers), np.full(len(customers), 1.0 / len(customers)), resamples
    )
    return np.vstack([np.ones(len(replayed)), counts[:, codes]]), len(customers)


def _lift_draws(weights: np.ndarray, per: Mapping[str, np.ndarray]) -> np.ndarray:
    """Captured lift of the first offer on each resample: a ratio of sums, NaN where nothing
    could be gained."""
    random = weights @ per["random"]
    achievable = weights @ per["best"] - random
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(achievable > 0, (weights @ per["first"] - random) / achievable, np.nan)


def compare_models(
    settings: Settings,
    month: dt.date,
    later: ChampionModels,
    earlier_models: ChampionModels,
    *,
    sample: int,
    seed: int = 0,
    resamples: int = 1_000,
) -> dict[str, Any]:
    """The served model policy of two pairs of models on the same logged invoices of ``month``
    (the same sample and seed as ``evaluate_served_policies``), against the hidden acceptance:
    each one's captured lift and first offer acceptance, and ``later`` − ``earlier_models`` in
    captured lift with a paired bootstrap 95 % interval over customers (both on every draw)."""
    data_dir = Path(settings.data_dir)
    if not has_ground_truth(data_dir):
        raise ValueError(f"{data_dir} is not a simulated world: no hidden acceptance to compare")
    catalog = load_catalog(settings.catalog)
    objective = Objective.from_settings(settings)
    firsts, earlier = logged_decisions(data_dir, month, sample, seed)
    if firsts.empty:
        raise ValueError(f"no logged decisions with propensities in {month}")
    replays = [
        replay(firsts, earlier, settings, catalog, models, objective, seed=seed)
        for models in (later, earlier_models)
    ]
    if [r.decision_id for r in replays[0]] != [r.decision_id for r in replays[1]]:
        raise ValueError("the two models replayed different invoices")
    if not replays[0]:
        raise ValueError(f"no logged decision of {month} could be replayed")
    hidden = _hidden_acceptance([*replays[0], *replays[1]], data_dir, catalog)
    weights, customers = _customer_resamples(replays[0], resamples, seed)
    per = [per_invoice(replayed, "model", hidden) for replayed in replays]
    lifts = [_lift_draws(weights, arrays) for arrays in per]
    return {
        "month": month.isoformat()[:7],
        "invoices": len(replays[0]),
        "customers": customers,
        "resamples": resamples,
        "lift_captured": [float(draws[0]) if np.isfinite(draws[0]) else None for draws in lifts],
        "first_offer_acceptance": [float(np.mean(arrays["first"])) for arrays in per],
        "difference": _interval(lifts[0][0] - lifts[1][0], (lifts[0] - lifts[1])[1:]),
    }


def _own_lift(
    replayed: Sequence[Replayed], hidden: Mapping[tuple[str, str], float]
) -> float | None:
    """The peer's captured lift against its own candidates (eligible, guardrails ignored) rather
    than the engine's: (first − random candidate) / (best candidate − random candidate)."""
    first, best, random = 0.0, 0.0, 0.0
    for r in replayed:
        if not r.profiled or not r.eligible:
            continue  # the peer decides only these itself
        p = [hidden.get((r.decision_id, o), 0.0) for o in r.eligible]
        shown = r.shown[PEER]
        first += hidden.get((r.decision_id, shown[0]), 0.0) if shown else 0.0
        best, random = best + max(p), random + float(np.mean(p))
    return (first - random) / (best - random) if best > random else None


def _likeliest(scores: Mapping[str, float], among: Sequence[str]) -> str | None:
    """The offer of ``among`` with the highest score (the offer id breaks ties), or None."""
    scored = [o for o in among if o in scores]
    return max(scored, key=lambda o: (scores[o], o)) if scored else None


def _lead(
    values: Mapping[str, float],
    acceptance: Mapping[str, float],
    among: Sequence[str],
    tolerance: float,
) -> str | None:
    """The offer the engine's greedy order puts first among ``among`` by ``values``, with the
    engine's tie order (the higher value, then the lower offer id) and its ``tolerance`` for a
    likelier offer (``acceptance``)."""
    ranked = sorted((o for o in among if o in values), key=lambda o: (-values[o], o))
    first = greedy_order(
        [values[o] for o in ranked],
        ["offer"] * len(ranked),
        [True] * len(ranked),
        1,
        [acceptance.get(o, 0.0) for o in ranked],
        tolerance,
    )
    return ranked[first[0]] if first else None


def peer_gap(
    replayed: Sequence[Replayed],
    hidden: Mapping[tuple[str, str], float],
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """Where the argmax peer's lead over the model policy with the guardrails lifted comes from.

    On the invoices the model decides, both choose among the same offers (eligible, the
    guardrails and floors ignored): the peer by its classifier's acceptance, the engine by the
    champion's acceptance × the objective's value. Two more orders of those offers tell the
    causes apart: the champion's acceptance alone (``model_likeliest``: the model against the
    peer, objective aside), and the hidden acceptance × the objective's value among the offers
    the engine may show (``hidden_value_order``: the objective, and its ``tolerance`` for a
    likelier offer, with acceptance known exactly).
    In captured lift (the engine's eligible set as the reference, as for every policy), the gap
    peer − engine is the sum of

    - ``objective_weighting``: peer − hidden value order, what no acceptance model can win back
      while the objective weighs value;
    - ``acceptance_estimates``: hidden value order − engine, what the champion's acceptance
      estimates cost under the objective's weighting;
    - ``undecided_by_the_model``: the invoices without profiling consent, where the peer shows
      what the served engine shows and the engine decides without the model.

    Per acceptance estimate, also the share of those invoices where its likeliest offer is the
    hidden best, and that offer's mean hidden acceptance. Needs the ``lifted:guardrails`` and
    ``peer`` choices; empty without them.
    """
    lifted = LIFTED + "guardrails"
    if not replayed or any(lifted not in r.shown or PEER not in r.shown for r in replayed):
        return {}
    orders = ("peer", "engine", "model_likeliest", "hidden_value_order")
    decided = {name: 0.0 for name in orders}
    undecided = {"peer": 0.0, "engine": 0.0}
    best_total = random_total = 0.0
    # per estimate: [invoices whose likeliest offer is the hidden best, its hidden acceptance]
    ranking: dict[str, list[float]] = {"model": [0, 0.0], "peer": [0, 0.0]}
    invoices, hidden_best = 0, 0.0

    def accepted(r: Replayed, offer: str | None) -> float:
        return hidden.get((r.decision_id, offer), 0.0) if offer is not None else 0.0

    for r in replayed:
        reference = [accepted(r, o) for o in r.passed]
        best_total += max(reference) if reference else 0.0
        random_total += float(np.mean(reference)) if reference else 0.0
        peer_first = r.shown[PEER][0] if r.shown[PEER] else None
        engine_first = r.shown[lifted][0] if r.shown[lifted] else None
        if not (r.profiled and r.eligible):
            undecided["peer"] += accepted(r, peer_first)
            undecided["engine"] += accepted(r, engine_first)
            continue
        showable = [o for o in r.eligible if r.value_sek.get(o, 0.0) > 0]
        value_order = {o: accepted(r, o) * r.value_sek[o] for o in showable}
        exact = {o: accepted(r, o) for o in showable}
        likeliest = _likeliest(r.model_acceptance, r.eligible)
        decided["peer"] += accepted(r, peer_first)
        decided["engine"] += accepted(r, engine_first)
        decided["model_likeliest"] += accepted(r, likeliest)
        decided["hidden_value_order"] += accepted(r, _lead(value_order, exact, showable, tolerance))
        top = max(accepted(r, o) for o in r.eligible)
        invoices, hidden_best = invoices + 1, hidden_best + top
        for name, chosen in (("model", likeliest), ("peer", peer_first)):
            ranking[name][0] += int(chosen is not None and accepted(r, chosen) >= top)
            ranking[name][1] += accepted(r, chosen)
    achievable = best_total - random_total
    if achievable <= 0 or invoices == 0:
        return {}

    def lift(first: float) -> float:
        return (first - random_total) / achievable

    undecided_total = undecided["peer"]
    lifts = {name: lift(decided[name] + undecided_total) for name in orders}
    lifts["engine"] = lift(decided["engine"] + undecided["engine"])
    return {
        "invoices_decided_by_the_model": invoices,
        "lift_captured": lifts,
        "gap": lifts["peer"] - lifts["engine"],
        "objective_weighting": (decided["peer"] - decided["hidden_value_order"]) / achievable,
        "acceptance_estimates": (decided["hidden_value_order"] - decided["engine"]) / achievable,
        "undecided_by_the_model": (undecided["peer"] - undecided["engine"]) / achievable,
        "likeliest_is_hidden_best": {name: hits / invoices for name, (hits, _) in ranking.items()},
        "likeliest_hidden_acceptance": {
            name: total / invoices for name, (_, total) in ranking.items()
        },
        "hidden_best_acceptance": hidden_best / invoices,
    }


def choose_by_peer(
    replayed: Sequence[Replayed], events: pd.DataFrame, settings: Settings, catalog: Catalog
) -> ArgmaxPeer:
    """Train the argmax peer on ``events`` before the replayed month and add its choice to every
    replayed decision as policy ``peer`` (pipelines/argmax_peer.py says what it respects), and
    its likeliest offer among those the guardrails let through as ``peer_within_guardrails``."""
    month = min(r.day for r in replayed).replace(day=1)
    peer = ArgmaxPeer.train(events, Path(settings.features_dir), catalog, start_of_day(month))
    pairs = pd.DataFrame(
        [
            {"decision_id": r.decision_id, CUSTOMER_KEY: r.customer_id, "offer_id": o, "at": r.day}
            for r in replayed
            if r.profiled
            for o in r.eligible
        ],
        columns=["decision_id", CUSTOMER_KEY, "offer_id", "at"],
    )
    pairs["at"] = pd.to_datetime(pairs["at"]).dt.tz_localize("UTC")
    pairs["p"] = peer.acceptance(pairs)
    passed = {(r.decision_id, o) for r in replayed if r.profiled for o in r.passed}
    within = [
        (d, o) in passed for d, o in zip(pairs["decision_id"], pairs["offer_id"], strict=True)
    ]
    chosen = {
        PEER: likeliest_offers(pairs),
        PEER_WITHIN_GUARDRAILS: likeliest_offers(pairs[np.asarray(within, dtype=bool)]),
    }
    for r in replayed:
        for name, choices in chosen.items():
            if r.profiled:
                r.shown[name] = [choices[r.decision_id]] if r.decision_id in choices else []
            else:  # without profiling consent: what the served engine shows, without personal data
                r.shown[name] = r.shown["model"][:1]
    return peer


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
    peer: bool | None = None,
    paired_resamples: int = 1_000,
    what_if: Mapping[str, Sequence[float]] | None = None,
) -> PolicyEvaluation:
    """Replay the logged decisions of ``month`` with each policy and report them; with
    ``ablation``, also the model policy with each rule of ``LIFTABLE`` lifted in turn and with
    the guardrails the peer ignores lifted together; with ``peer`` (default: ``ablation``), the
    argmax peer trained on the events before the month. On a simulated world, paired customer
    bootstrap intervals of captured lift and value (``paired_bootstrap``).
    ``models`` replaces the champions (a candidate before it is promoted). ``what_if``: per
    setting of the objective, values to decide the model policy with, one at a time
    (``what_if_objectives``; raises ``ValueError`` for one it refuses, before any replay)."""
    resolved = settings or get_settings()
    data_dir = Path(resolved.data_dir)
    catalog = load_catalog(resolved.catalog)
    objective = Objective.from_settings(resolved)
    variants = what_if_objectives(objective, what_if or {})
    firsts, earlier = logged_decisions(data_dir, month, sample, seed)
    if firsts.empty:
        raise ValueError(f"no logged decisions with propensities in {month or 'the newest month'}")
    models = models if models is not None else load_champions(resolved)
    ablations = [*sorted(LIFTABLE), *LIFTED_SETS] if ablation and models.available else []
    replayed = replay(
        firsts,
        earlier,
        resolved,
        catalog,
        models,
        objective,
        seed=seed,
        ablations=ablations,
        what_if=variants,
    )
    served = list(POLICIES)
    trained: dict[str, Any] = {}
    if (ablation if peer is None else peer) and models.available and replayed:
        started = time.perf_counter()
        argmax = choose_by_peer(replayed, earlier, resolved, catalog)
        trained = {
            "training_rows": argmax.rows,
            "trained_before": argmax.cutoff.isoformat(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        served += [PEER, PEER_WITHIN_GUARDRAILS]
    hidden = _hidden_acceptance(replayed, data_dir, catalog) if has_ground_truth(data_dir) else None
    policies = {
        policy: _figures(
            replayed,
            policy,
            hidden,
            objective.horizon_months,
            resamples,
            accepted_offer_value_sek=objective.accepted_offer_value_sek,
        )
        for policy in (*served, *(LIFTED + rule for rule in ablations), *variants)
    }
    if PEER in policies:
        policies[PEER]["training"] = trained
        if hidden is not None:
            policies[PEER]["lift_captured_of_its_candidates"] = _own_lift(replayed, hidden)
    paired = (
        paired_bootstrap(replayed, hidden, served, resamples=paired_resamples, seed=seed)
        if hidden is not None and replayed
        else {}
    )
    gap = (
        peer_gap(replayed, hidden, objective.value_tolerance)
        if hidden is not None and PEER in policies
        else {}
    )
    logged_month = str(firsts["day"].iloc[0])[:7]
    log.info("evaluated %d decisions of %s", len(replayed), logged_month)
    return PolicyEvaluation(
        logged_month, len(replayed), policies, objective.horizon_months, paired, gap
    )


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
        for key in (
            "first_offer_acceptance",
            "lift_captured",
            "objective_value_sek",
            "money_terms_value_sek",
        ):
            if figures.get(key) is not None:
                metrics[f"served_{policy}_{key}"] = figures[key]
    return metrics
