"""The hidden ground truth of the simulated world: who accepts an offer, and who leaves.

Training code never reads this module or its output (``_ground_truth/``); it sees only the tables.
Acceptance responds strongly to what the tables show (plan fit saving, overage, months over the
allowance, fees, tenure, age, new-customer prices) and also to latent traits the tables only hint
at. Churn follows the survey's law: the likelihood to stay falls as the price paid runs ahead of
the value received, accumulated month by month.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY
from core.contract import Column, Table
from pipelines.simulation.observables import OfferContext
from pipelines.simulation.offers import ADDON, LOYALTY, PAYMENT_HELP, PLAN, OfferArrays

# Acceptance at rank 2 and 3 is lower: fewer readers get that far down the invoice.
POSITION_FACTOR = (1.0, 0.7, 0.5)
MAX_ACCEPTANCE = 0.9
BEHAVIOUR_FILE = "behaviour.json"
# How much each coefficient varies with the seed inside a profile: a factor exp(N(0, σ)) on the
# weights and an added N(0, σ) on the base logits.
SEED_SPREAD = 0.2


@dataclass(frozen=True)
class Behaviour:
    """What drives acceptance in a simulated world: the coefficients of the hidden logit.

    Profiles (``PROFILES``) differ in what matters most: ``price`` (saving on one's own usage,
    overage, fees, new-customer prices), ``habit`` (inertia: tenure, satisfaction and openness
    decide, money barely moves anyone, loyalty prices and familiar add-ons win) and ``needs``
    (specific needs: roaming for travellers, payment help for those with reminder fees, streaming
    and extra SIMs by life stage). :func:`behaviour_for` varies a profile's coefficients with the
    seed, so no engine is tuned to one world's economics.
    """

    profile: str
    base_plan: float = -3.1
    base_addon: float = -3.5
    base_loyalty: float = -3.0
    base_payment: float = -3.0
    openness: float = 0.45
    satisfaction: float = 0.25
    saving: float = 0.022
    overage_relief: float = 0.6
    fees_on_plans: float = 0.004
    fairness_penalty: float = 1.2
    loyalty_pull: float = 1.4
    loyalty_without_gap: float = -1.5
    new_customer_penalty: float = 0.5
    long_tenure_penalty: float = 0.35
    loyalty_long_tenure: float = 0.6
    young: float = 0.35
    old: float = 0.35
    digital_addon: float = 0.5
    binding: float = 0.8
    payment_fees: float = 0.03
    payment_base: float = -0.6
    taste: float = 1.0
    roaming_need: float = 0.0
    habit: float = 0.0

    def base_logits(self) -> np.ndarray:
        """The base logit per offer kind code (PLAN, ADDON, LOYALTY, PAYMENT_HELP order)."""
        by_kind = {
            PLAN: self.base_plan,
            ADDON: self.base_addon,
            LOYALTY: self.base_loyalty,
            PAYMENT_HELP: self.base_payment,
        }
        return np.array([by_kind[code] for code in sorted(by_kind)])

    def write(self, folder: Path) -> None:
        (Path(folder) / BEHAVIOUR_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Behaviour:
        """The behaviour written beside the ground truth; the default profile for older worlds."""
        path = Path(folder) / BEHAVIOUR_FILE
        if not path.exists():
            return PROFILES["price"]
        return cls(**json.loads(path.read_text()))


PROFILES: dict[str, Behaviour] = {
    "price": Behaviour("price"),
    "habit": Behaviour(
        "habit",
        base_plan=-3.6,
        base_addon=-3.2,
        base_loyalty=-2.6,
        openness=0.9,
        satisfaction=0.6,
        saving=0.005,
        overage_relief=0.2,
        fees_on_plans=0.001,
        fairness_penalty=0.3,
        loyalty_pull=0.4,
        loyalty_without_gap=-0.3,
        new_customer_penalty=1.0,
        long_tenure_penalty=0.0,
        loyalty_long_tenure=1.2,
        digital_addon=1.2,
        payment_fees=0.01,
        habit=0.08,
    ),
    "needs": Behaviour(
        "needs",
        base_plan=-3.4,
        base_addon=-3.8,
        saving=0.01,
        overage_relief=1.0,
        fairness_penalty=0.6,
        payment_fees=0.06,
        payment_base=-1.2,
        taste=2.0,
        roaming_need=6.0,
    ),
}


def behaviour_for(profile: str, seed: int) -> Behaviour:
    """The profile's coefficients varied with the seed (the same seed, the same world)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown behaviour profile {profile!r}; known: {sorted(PROFILES)}")
    template = PROFILES[profile]
    rng = np.random.default_rng([seed, 20_261_204])
    varied: dict[str, Any] = {}
    for item in fields(Behaviour):
        if item.name == "profile":
            continue
        value = getattr(template, item.name)
        if item.name.startswith("base_"):
            varied[item.name] = round(value + rng.normal(0.0, SEED_SPREAD), 4)
        else:
            varied[item.name] = round(value * float(np.exp(rng.normal(0.0, SEED_SPREAD))), 5)
    return replace(template, **varied)


# How fast the felt gap between price and value moves (share of the new month's gap).
VALUE_GAP_WEIGHT = 0.25
_CHURN_BASE_LOGIT = -5.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Traits:
    """Latent traits per customer. Shares are in 0–1; the others are standard normal."""

    price_sensitivity: np.ndarray
    digital_engagement: np.ndarray
    satisfaction: np.ndarray
    loyalty: np.ndarray
    openness: np.ndarray
    fee_sensitivity: np.ndarray
    fairness_sensitivity: np.ndarray
    payment_risk: np.ndarray
    travel: np.ndarray

    def take(self, rows: np.ndarray) -> Traits:
        return Traits(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Traits:
        return cls(**{f.name: frame[f.name].to_numpy(dtype=float) for f in fields(cls)})


CUSTOMER_TRAITS = Table(
    "customer_traits",
    (CUSTOMER_KEY,),
    (Column(CUSTOMER_KEY, "str"), *(Column(f.name, "float") for f in fields(Traits))),
)
# The acceptance probability (before the rank's discount) behind every logged offer.
OFFER_PROBABILITIES = Table(
    "offer_probabilities",
    ("decision_id", "offer_id"),
    (
        Column("decision_id", "str"),
        Column("offer_id", "str"),
        Column("acceptance_probability", "float"),
    ),
)


def draw_traits(rng: np.random.Generator, age: np.ndarray, is_business: np.ndarray) -> Traits:
    """Traits with the correlations the survey suggests: the young are more price-aware and
    digital, older customers pay by paper invoice and read the invoice as their contact."""
    n = len(age)
    young = (age < 30).astype(float)
    struggling = rng.random(n) < np.where(age < 30, 0.13, 0.06)
    return Traits(
        price_sensitivity=_sigmoid(rng.normal(0.0, 1.0, n) + 0.5 * young - 0.4 * is_business),
        digital_engagement=_sigmoid(1.2 * rng.normal(0.0, 1.0, n) + 0.04 * (40.0 - age)),
        satisfaction=rng.normal(0.0, 1.0, n),
        loyalty=rng.normal(0.0, 1.0, n),
        openness=rng.normal(0.0, 1.0, n),
        fee_sensitivity=_sigmoid(rng.normal(0.0, 1.2, n)),
        fairness_sensitivity=_sigmoid(rng.normal(0.0, 1.2, n)),
        payment_risk=np.where(struggling, rng.uniform(0.25, 0.6, n), rng.uniform(0.0, 0.05, n)),
        travel=rng.beta(1.2, 9.0, n),
    )


# Offer-specific tastes of the simulated operator's customers, by offer id.
def _offer_taste(
    offer_ids: tuple[str, ...], offer: np.ndarray, ctx: OfferContext, traits: Traits
) -> np.ndarray:
    taste = np.zeros(len(offer))
    ids = np.asarray(offer_ids, dtype=object)[offer]
    young = ctx.age < 30
    einvoice = ids == "PAY_EINVOICE"
    taste[einvoice] = 1.6 * (traits.digital_engagement[einvoice] - 0.5) - 0.03 * np.maximum(
        ctx.age[einvoice] - 60, 0
    )
    autogiro = ids == "PAY_AUTOGIRO"
    taste[autogiro] = 0.7 * (ctx.age[autogiro] >= 50) - 0.3
    instalment = ids == "PAY_INSTALMENT"
    taste[instalment] = 0.006 * ctx.reminder_fees_3m_sek[instalment] - 0.3
    streaming = ids == "ADDON_STREAMING"
    taste[streaming] = 1.1 * young[streaming] - 0.8 * (ctx.age[streaming] >= 55)
    extra_sim = ids == "ADDON_EXTRA_SIM"
    taste[extra_sim] = 0.6 * ((ctx.age[extra_sim] >= 35) & (ctx.age[extra_sim] < 55))
    return taste


def acceptance_probability(
    ctx: OfferContext, traits: Traits, offers: OfferArrays, behaviour: Behaviour = PROFILES["price"]
) -> np.ndarray:
    """Probability that the customer accepts the offer when it is shown first.

    ``traits`` are the pairs' customers' traits (aligned with ``ctx``).
    """
    b = behaviour
    kind = offers.kind[ctx.offer]
    is_plan = kind == PLAN
    is_addon = kind == ADDON
    is_loyalty = kind == LOYALTY
    is_payment = kind == PAYMENT_HELP
    adds_allowance = is_addon & (
        (np.nan_to_num(offers.data_gb[ctx.offer], nan=1.0) > 0)
        | (np.nan_to_num(offers.roaming_data_gb[ctx.offer], nan=1.0) > 0)
    )
    changes_usage_cost = is_plan | adds_allowance | is_loyalty
    price_weight = 0.5 + 1.5 * traits.price_sensitivity
    saving = np.clip(ctx.saving_sek, -250.0, 250.0)
    relieves_overage = (ctx.current_overage_sek - ctx.offer_overage_sek) > 1.0
    new_customers_pay_less = ctx.pays_above_new_customers_sek > 0
    age = ctx.age
    tenure = ctx.tenure_months

    logit = (
        b.base_logits()[kind] + b.openness * traits.openness + b.satisfaction * traits.satisfaction
    )
    # Money: what the customer saves on their own usage, weighed by how much money matters to them.
    logit += np.where(changes_usage_cost, b.saving * price_weight * saving, 0.0)
    # A recurring extra charge hurts beyond its amount; an offer that ends it is welcome.
    logit += np.where(
        (is_plan | is_addon) & relieves_overage, b.overage_relief * ctx.months_over_allowance, 0.0
    )
    logit += np.where(is_plan | is_loyalty, b.fees_on_plans * ctx.fees_3m_sek, 0.0)
    # Fairness: a price new customers get cheaper puts people off; a loyalty price draws them in.
    logit -= np.where(
        (is_plan | is_addon) & new_customers_pay_less,
        b.fairness_penalty * traits.fairness_sensitivity,
        0.0,
    )
    loyalty_pull = np.where(
        new_customers_pay_less,
        0.2 + b.loyalty_pull * traits.fairness_sensitivity,
        b.loyalty_without_gap,
    )
    logit += np.where(is_loyalty, loyalty_pull, 0.0)
    logit += np.where(
        is_plan | is_addon,
        -b.new_customer_penalty * (tenure < 6) - b.long_tenure_penalty * (tenure >= 120),
        0.0,
    )
    logit += np.where(is_loyalty, b.loyalty_long_tenure * (tenure >= 60), 0.0)
    logit += np.where(is_plan | adds_allowance, b.young * (age < 30) - b.old * (age >= 65), 0.0)
    logit += np.where(
        is_addon & ~adds_allowance, b.digital_addon * (traits.digital_engagement - 0.5), 0.0
    )
    logit -= np.where(is_plan & ctx.in_binding, b.binding, 0.0)
    logit += np.where(
        is_payment,
        b.payment_fees * ctx.fees_3m_sek * (0.5 + traits.fee_sensitivity) + b.payment_base,
        0.0,
    )
    logit += b.taste * _offer_taste(offers.offer_ids, ctx.offer, ctx, traits)
    # Needs: travellers want data abroad, whatever it costs.
    adds_roaming = is_addon & (np.nan_to_num(offers.roaming_data_gb[ctx.offer], nan=1.0) > 0)
    logit += np.where(adds_roaming, b.roaming_need * (traits.travel - 0.12), 0.0)
    # Habit: the longer a customer stays, the more they take what is offered to them.
    logit += b.habit * np.minimum(tenure, 120) / 12.0 * traits.loyalty
    return MAX_ACCEPTANCE * _sigmoid(logit)


def draw_outcomes(
    acceptance: np.ndarray,
    shown: np.ndarray,
    digital_engagement: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Outcome per ``[decision, rank]`` (an index into core.contract.OUTCOMES).

    The customer reads from the top and accepts at most one offer; an offer not accepted is
    clicked, declined or ignored.
    """
    decisions, ranks = acceptance.shape
    outcome = np.zeros((decisions, ranks), dtype=np.int64)  # 0 = ignored
    accepted_before = np.zeros(decisions, dtype=bool)
    for rank in range(ranks):
        p = acceptance[:, rank] * POSITION_FACTOR[rank]
        accept = shown[:, rank] & ~accepted_before & (rng.random(decisions) < p)
        accepted_before |= accept
        reaction = rng.random(decisions)
        click = 0.03 + 0.12 * digital_engagement
        decline = click + 0.06 + 0.6 * acceptance[:, rank]
        outcome[:, rank] = np.where(
            accept, 2, np.where(reaction < click, 1, np.where(reaction < decline, 3, 0))
        )
    return outcome


def monthly_value_gap(
    cost_sek: np.ndarray,
    fair_cost_sek: np.ndarray,
    above_new_customers_sek: np.ndarray,
    fees_sek: np.ndarray,
    traits: Traits,
) -> np.ndarray:
    """How far this month's price ran ahead of the value, as this customer feels it.

    ``fair_cost_sek`` is what the cheapest plan for this month's usage costs a new customer.
    """
    overpaid = np.clip((cost_sek - fair_cost_sek) / np.maximum(fair_cost_sek, 1.0), -0.5, 2.0)
    return (
        overpaid * (0.5 + traits.price_sensitivity)
        + 0.8 * traits.fairness_sensitivity * above_new_customers_sek / np.maximum(cost_sek, 1.0)
        + traits.fee_sensitivity * fees_sek / 60.0
    )


def churn_probability(
    value_gap: np.ndarray,
    traits: Traits,
    in_binding: np.ndarray,
    tenure_months: np.ndarray,
    in_collection: np.ndarray,
) -> np.ndarray:
    """Probability of leaving at the end of this month: the likelihood to stay falls with the
    accumulated gap between price and value; a binding period and loyalty hold customers."""
    logit = (
        _CHURN_BASE_LOGIT
        - 0.4 * traits.satisfaction
        - 0.3 * traits.loyalty
        + 1.4 * value_gap
        - 1.1 * in_binding
        + 0.9 * in_collection
        + 0.5 * (tenure_months < 12)
    )
    return _sigmoid(logit)
