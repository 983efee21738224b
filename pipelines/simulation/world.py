"""The simulated operator, month by month: ``simulate`` writes the tables of docs/data-contract.md.

Each month, in this order: consents change; customers billed this month get their invoice for
last month's usage and, every third invoice and with marketing consent, a decision of the
historical policy; new customers sign up; everyone uses their phone and is charged for overage on
their plan; the felt gap between price and value moves; some customers leave at the month's end;
accepted plan offers and plans customers pick themselves start on the first of the next month.

A usage month is billed on the plan in force at its end: contracts change on the first of a
month, except a new customer's first contract, which starts on the signup day. A customer who
leaves keeps no contract after the last day of that month and has no usage after it; the final
invoice for that month is dated on the billing day of the next month. Nothing dated after the
last simulated month is written.

Everything is drawn from one ``numpy.random.default_rng(seed)`` in a fixed order, so a seed
gives the same files. The latent traits and the probabilities behind logged outcomes go to
``out/_ground_truth/``, which training never reads.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from core.calendar import DAY, age_in_year, months_between, year_of
from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from core.contract import (
    CONSENT_PURPOSES,
    CONSENTS,
    CONTRACTS,
    CUSTOMERS,
    INVOICES,
    OFFER_EVENTS,
    OUTCOMES,
    SURVEY_QUESTIONS,
    SURVEY_RESPONSES,
    TABLES,
    USAGE_MONTHLY,
)
from core.plan_fit import FIT_MONTHS, monthly_overage_sek
from pipelines.simulation import behaviour, policy
from pipelines.simulation.behaviour import Behaviour, behaviour_for
from pipelines.simulation.billing import INVOICE_FEE_SEK, PaymentLedger
from pipelines.simulation.consents import MARKETING, PROFILING, ConsentLog
from pipelines.simulation.contracts import (
    ContractBook,
    best_fitting_plan,
    choose_plan,
    plan_costs,
)
from pipelines.simulation.observables import CustomerState, offer_context
from pipelines.simulation.offers import LOYALTY, PLAN, OfferArrays
from pipelines.simulation.population import DECISION_EVERY_MONTHS, REGIONS, draw_population
from pipelines.simulation.survey import ADULT_AGE, SURVEY_SHARE, Respondents, answer_survey
from pipelines.simulation.timeline import Timeline
from pipelines.simulation.usage import UsageProfile
from pipelines.simulation.writer import OutputFolder

logger = logging.getLogger(__name__)

GROUND_TRUTH_FOLDER = "_ground_truth"
CATALOG_FILE = "offers.yaml"
SHOWN_AT_HOUR = np.timedelta64(6, "h")
MAX_RESPONSE_DAYS = 10
# Plans customers pick themselves, without an offer: a few each month, more after overage.
OWN_PLAN_CHANGE = 0.002
OWN_PLAN_CHANGE_AFTER_OVERAGE = 0.05
GOODWILL_OF_ACCEPTED_OFFER = 0.2
# In pending_plan: no contract change waiting for next month.
_NO_CHANGE = -1
_ACCEPTED = OUTCOMES.index("accepted")
_DECLINED = OUTCOMES.index("declined")
_IGNORED = OUTCOMES.index("ignored")


@dataclass(frozen=True)
class SimulationSummary:
    """What ``simulate`` wrote: rows per table and how long it took."""

    out: Path
    customers: int
    months: int
    seed: int
    row_counts: dict[str, int]
    seconds: float

    def describe(self) -> str:
        lines = [f"{name}: {rows:,} rows" for name, rows in self.row_counts.items()]
        lines.append(
            f"{self.customers:,} customers × {self.months} months (seed {self.seed}) "
            f"written to {self.out} in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def simulate(
    *,
    customers: int,
    months: int,
    seed: int,
    out: Path,
    catalog: Catalog,
    end_month: dt.date,
    behaviour: str = "price",
) -> SimulationSummary:
    """Simulate ``customers`` over ``months`` months ending with ``end_month`` into ``out``.

    ``behaviour`` names the profile of what drives acceptance (``behaviour.PROFILES``); its
    coefficients vary with the seed and are written to ``_ground_truth/behaviour.json``.
    """
    hidden = behaviour_for(behaviour, seed)
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if months < 1:
        raise ValueError("months must be at least 1")
    started = time.perf_counter()
    out = Path(out)
    with OutputFolder(out) as folder:
        world = _World(
            np.random.default_rng(seed),
            OfferArrays.from_catalog(catalog),
            Timeline.ending(end_month, months),
            customers,
            folder,
            hidden,
        )
        world.run()
        ground_truth = folder.staging / GROUND_TRUTH_FOLDER
        ground_truth.mkdir(exist_ok=True)
        hidden.write(ground_truth)
        folder.write_text(
            CATALOG_FILE,
            yaml.safe_dump(catalog.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
        )
        counts = dict(folder.row_counts)
    order = [table.name for table in (*TABLES, SURVEY_RESPONSES)]
    summary = SimulationSummary(
        out=out,
        customers=customers,
        months=months,
        seed=seed,
        row_counts={name: counts.get(name, 0) for name in order},
        seconds=time.perf_counter() - started,
    )
    logger.info("%s", summary.describe())
    return summary


def _uuids(rng: np.random.Generator, count: int) -> pa.Array:
    """Version-4 style UUID strings drawn from ``rng``."""
    raw = np.frombuffer(rng.bytes(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    hexed = np.empty((count, 32), dtype=np.uint8)
    hexed[:, 0::2] = digits[raw >> 4]
    hexed[:, 1::2] = digits[raw & 0x0F]
    dash = np.full((count, 1), ord("-"), dtype=np.uint8)
    groups = (hexed[:, :8], hexed[:, 8:12], hexed[:, 12:16], hexed[:, 16:20], hexed[:, 20:])
    text = np.hstack([part for group in groups for part in (group, dash)][:-1])
    return pa.array(np.ascontiguousarray(text).view("S36").ravel()).cast(pa.string())


class _World:
    """The state of every customer, advanced one month at a time."""

    def __init__(
        self,
        rng: np.random.Generator,
        offers: OfferArrays,
        timeline: Timeline,
        customers: int,
        folder: OutputFolder,
        hidden: Behaviour,
    ) -> None:
        self.rng = rng
        self.hidden = hidden
        self.offers = offers
        self.timeline = timeline
        self.folder = folder
        self.people = draw_population(rng, customers, timeline)
        n = self.people.size
        self.traits = self.people.traits
        age_at_end = age_in_year(self.people.birth_year, np.array([timeline.last_day]))
        self.usage = UsageProfile.draw(rng, age_at_end, self.people.is_business)
        self.contracts = ContractBook(n, offers)
        self.consents = ConsentLog(n)
        self.ledger = PaymentLedger(n, self.traits.payment_risk)
        self.paper = self.people.paper_invoice.copy()
        # Customers whose accepted payment help takes effect after this month's invoice.
        self.leaving_paper = np.zeros(0, dtype=np.int64)
        self.settling = np.zeros(0, dtype=np.int64)
        self.alive = np.zeros(n, dtype=bool)
        self.value_gap = np.zeros(n)
        # Newest month first: the last FIT_MONTHS usage months and invoice months.
        self.history = {
            name: np.full((FIT_MONTHS, n), np.nan)
            for name in ("data_gb", "voice_minutes", "roaming_data_gb", "overage_sek")
        }
        self.invoice_fees = np.full((FIT_MONTHS, n), np.nan)
        self.reminder_fees = np.full((FIT_MONTHS, n), np.nan)
        self.used_last_month = np.zeros(0, dtype=np.int64)
        self.usage_cost_last_month = np.zeros(n)
        self.declined_in = np.full((n, len(offers)), -1000, dtype=np.int64)
        self.pending_plan = np.full(n, _NO_CHANGE, dtype=np.int64)
        self.pending_fee = np.zeros(n)
        numbers = np.char.zfill(np.arange(1, n + 1).astype(str), 7)
        self.numbers = pa.array(numbers)
        self.customer_ids = pc.binary_join_element_wise("C", self.numbers, "")
        for table in (*TABLES, SURVEY_RESPONSES):
            folder.open(table)
        folder.open(behaviour.OFFER_PROBABILITIES, GROUND_TRUTH_FOLDER)

    # -- the months ---------------------------------------------------------------------------

    def run(self) -> None:
        self._open_existing()
        for t in range(self.timeline.months):
            self._month(t)
        self._finish()

    def _month(self, t: int) -> None:
        start = self.timeline.starts[t]
        end = self.timeline.end_of(t)
        self.consents.month(self.rng, np.flatnonzero(self.alive), start, end + DAY)
        if t > 0:
            self._decide(t)
        # Invoice history moves on only after the decisions, which read last month's invoices.
        self._push_history(self.invoice_fees, self.reminder_fees)
        if t > 0:
            self._invoice(t)
            self._apply_payment_changes()
        self._sign_up(t)
        active = np.flatnonzero(self.alive)
        self._use(t, active)
        self._feel_and_leave(t, active)
        if t < self.timeline.months - 1:
            self._change_plans(t, active)
        self.pending_plan[:] = _NO_CHANGE
        self.usage.drift(self.rng)

    @staticmethod
    def _push_history(*histories: np.ndarray) -> None:
        for history in histories:
            history[1:] = history[:-1]
            history[0] = np.nan

    # -- signing up ---------------------------------------------------------------------------

    def _open_existing(self) -> None:
        """Customers already there at the first month: a contract begun some time before."""
        rng, people, first = self.rng, self.people, self.timeline.first_day
        who = np.flatnonzero(people.signup_month < 0)
        signup = people.signup_date[who]
        earliest = self.offers.valid_from[self.offers.plans].min()
        earliest_start = np.maximum(signup, earliest)
        span = np.maximum((first - earliest_start).astype(np.int64), 1)
        later = earliest_start + (rng.random(len(who)) * span).astype("timedelta64[D]")
        recent = months_between(signup, np.full(len(who), first)) < 24
        since_signup = (recent & (rng.random(len(who)) < 0.7)) | (signup >= later)
        begun = np.where(since_signup, signup, later)
        months_ago = months_between(begun, np.full(len(who), first))
        plan = choose_plan(
            rng,
            self.offers,
            self.usage.data_need_gb(who, months_ago),
            np.exp(self.usage.log_voice_minutes[who]),
            people.is_business[who],
            begun,
        )
        # New-customer prices for those who joined in the last year on the plan they have now.
        intro = since_signup & (signup >= first - np.timedelta64(365, "D"))
        fee = np.where(intro, self.offers.new_customer_fee[plan], self.offers.monthly_fee[plan])
        self.contracts.start(who, plan, begun, fee)
        at = self.consents.sign_up(rng, who, signup, self.traits.take(who))
        self.consents.change_before(rng, who, at, first)
        self.alive[who] = True

    def _sign_up(self, t: int) -> None:
        who = np.flatnonzero(self.people.signup_month == t)
        if not len(who):
            return
        signup = self.people.signup_date[who]
        plan = choose_plan(
            self.rng,
            self.offers,
            self.usage.data_need_gb(who),
            np.exp(self.usage.log_voice_minutes[who]),
            self.people.is_business[who],
            signup,
        )
        self.contracts.start(who, plan, signup, self.offers.new_customer_fee[plan])
        self.consents.sign_up(self.rng, who, signup, self.traits.take(who))
        self.alive[who] = True

    # -- usage and invoices -------------------------------------------------------------------

    def _use(self, t: int, active: np.ndarray) -> None:
        start = self.timeline.starts[t]
        month = int(start.astype("datetime64[M]").astype(np.int64) % 12) + 1
        used = self.usage.month(
            self.rng, active, self.traits.travel[active], month, self.timeline.days_in(t)
        )
        data_allowance, voice_allowance, roaming_allowance = self.contracts.allowances(active)
        overage = monthly_overage_sek(
            used.data_gb,
            used.voice_minutes,
            used.roaming_data_gb,
            data_allowance,
            voice_allowance,
            roaming_allowance,
        )
        self._push_history(*self.history.values())
        for name, values in (
            ("data_gb", used.data_gb),
            ("voice_minutes", used.voice_minutes),
            ("roaming_data_gb", used.roaming_data_gb),
            ("overage_sek", overage),
        ):
            self.history[name][0, active] = values
        self.used_last_month = active
        self.usage_cost_last_month[active] = self.contracts.fee[active] + overage
        self.folder.write(
            USAGE_MONTHLY,
            {
                CUSTOMER_KEY: self.customer_ids.take(pa.array(active)),
                "month": np.full(len(active), start),
                "data_gb": used.data_gb,
                "voice_minutes": used.voice_minutes,
                "sms": used.sms,
                "roaming_days": used.roaming_days,
                "roaming_data_gb": used.roaming_data_gb,
                "overage_sek": overage,
            },
        )

    def _invoice_ids(self, t: int, customers: np.ndarray) -> pa.Array:
        start = self.timeline.starts[t]
        prefix = f"INV-{str(start)[:7]}-"
        return pc.binary_join_element_wise(prefix, self.numbers.take(pa.array(customers)), "")

    def _billing_days(self, t: int, customers: np.ndarray) -> np.ndarray:
        return self.timeline.day_in_month(t, self.people.billing_day[customers])

    def _invoice(self, t: int) -> None:
        """Invoices dated this month for last month's usage (final invoices included)."""
        billed = self.used_last_month
        batch = self.ledger.issue(
            self.rng,
            billed,
            self._billing_days(t, billed),
            self.usage_cost_last_month[billed],
            self.paper[billed],
            self.timeline.last_day,
        )
        self.invoice_fees[0, billed] = batch.invoice_fee_sek
        self.reminder_fees[0, billed] = batch.reminder_fee_sek
        self.folder.write(
            INVOICES,
            {
                "invoice_id": self._invoice_ids(t, billed),
                CUSTOMER_KEY: self.customer_ids.take(pa.array(billed)),
                "invoice_date": batch.invoice_date,
                "due_date": batch.due_date,
                "amount_sek": batch.amount_sek,
                "invoice_fee_sek": batch.invoice_fee_sek,
                "reminder_fee_sek": batch.reminder_fee_sek,
                "paid_date": batch.paid_date,
                "reminders": batch.reminders,
                "sent_to_collection": batch.sent_to_collection,
            },
        )

    # -- offers -------------------------------------------------------------------------------

    def _decide(self, t: int) -> None:
        """The historical policy's decisions on this month's invoices, and their outcomes."""
        rng, people, offers = self.rng, self.people, self.offers
        billed = self.used_last_month
        due = billed[
            self.alive[billed] & (people.decision_phase[billed] == t % DECISION_EVERY_MONTHS)
        ]
        shown_day = self._billing_days(t, due)
        shown_at = shown_day.astype("datetime64[us]") + SHOWN_AT_HOUR
        asked = self.consents.granted_at(MARKETING, due, shown_at)
        who, shown_day, shown_at = due[asked], shown_day[asked], shown_at[asked]
        decisions, k = len(who), len(offers)
        if not decisions:
            return

        state = self._state(who, shown_day)
        pair_customer = np.repeat(np.arange(decisions), k)
        pair_offer = np.tile(np.arange(k), decisions)
        ctx = offer_context(state, pair_customer, pair_offer, offers)
        adult = age_in_year(people.birth_year[who], shown_day) >= 18
        facts = policy.Customers(
            plan=self.contracts.plan[who],
            monthly_fee=self.contracts.fee[who],
            in_binding=self.contracts.in_binding(who, shown_day),
            tenure_months=months_between(people.signup_date[who], shown_day),
            paper_invoice=self.paper[who],
            in_collection=self.ledger.in_collection(who, shown_day),
            unpaid_reminders=self.ledger.unpaid_reminders(who, shown_day),
            personalised=self.consents.granted_at(PROFILING, who, shown_at) & adult,
        )
        eligible = policy.eligible_offers(
            offers,
            ctx,
            facts,
            offers.available(shown_day, people.is_business[who]),
            t - self.declined_in[who] <= policy.DECLINE_BLOCK_MONTHS,
        )
        scores = policy.rule_scores(offers, ctx, facts)
        chosen, propensity = policy.choose_slates(rng, scores, eligible)
        shown = chosen >= 0
        pairs = np.where(shown, np.arange(decisions)[:, None] * k + chosen, 0)
        acceptance = np.zeros(chosen.shape)
        flat = pairs[shown]
        acceptance[shown] = behaviour.acceptance_probability(
            ctx.take(flat), self.traits.take(who[ctx.customer[flat]]), offers, self.hidden
        )
        outcome = behaviour.draw_outcomes(
            acceptance, shown, self.traits.digital_engagement[who], rng
        )
        delay = np.timedelta64(30, "m") + (
            np.minimum(rng.exponential(1.5, chosen.shape), MAX_RESPONSE_DAYS) * 86_400e6
        ).astype("timedelta64[us]")
        responded_at = shown_at[:, None] + delay
        world_end = (self.timeline.last_day + DAY).astype("datetime64[us]")
        # A response after the world's last day is not known yet.
        outcome = np.where(responded_at < world_end, outcome, _IGNORED)
        responded_at = np.where(outcome == _IGNORED, np.datetime64("NaT", "us"), responded_at)

        decision_ids = _uuids(rng, decisions)
        rows, ranks = np.nonzero(shown)
        customers = who[rows]
        offer_ids = pa.array(offers.offer_ids).take(pa.array(chosen[rows, ranks]))
        row_decisions = decision_ids.take(pa.array(rows))
        self.folder.write(
            OFFER_EVENTS,
            {
                "decision_id": row_decisions,
                "invoice_id": self._invoice_ids(t, customers),
                CUSTOMER_KEY: self.customer_ids.take(pa.array(customers)),
                "offer_id": offer_ids,
                "shown_at": shown_at[rows],
                "rank": ranks + 1,
                "policy": pa.array([policy.POLICY_NAME] * len(rows)),
                "propensity": propensity[rows, ranks],
                "outcome": pa.array(OUTCOMES).take(pa.array(outcome[rows, ranks])),
                "outcome_at": responded_at[rows, ranks],
            },
        )
        self.folder.write(
            behaviour.OFFER_PROBABILITIES,
            {
                "decision_id": row_decisions,
                "offer_id": offer_ids,
                "acceptance_probability": acceptance[rows, ranks],
            },
            folder=GROUND_TRUTH_FOLDER,
        )
        self._apply_outcomes(t, who, chosen, outcome)

    def _apply_outcomes(
        self, t: int, who: np.ndarray, chosen: np.ndarray, outcome: np.ndarray
    ) -> None:
        offers = self.offers
        rows, ranks = np.nonzero(outcome == _DECLINED)
        self.declined_in[who[rows], chosen[rows, ranks]] = t
        rows, ranks = np.nonzero(outcome == _ACCEPTED)
        customers = who[rows]
        offer = chosen[rows, ranks]
        kind = offers.kind[offer]
        self.value_gap[customers] -= GOODWILL_OF_ACCEPTED_OFFER
        plan = kind == PLAN
        self.pending_plan[customers[plan]] = offer[plan]
        self.pending_fee[customers[plan]] = offers.monthly_fee[offer[plan]]
        loyal = kind == LOYALTY
        current = self.contracts.plan[customers[loyal]]
        self.pending_plan[customers[loyal]] = current
        self.pending_fee[customers[loyal]] = offers.new_customer_fee[current]
        ids = np.asarray(offers.offer_ids, dtype=object)[offer]
        # The offer was printed on this month's invoice, so that invoice is issued as it was;
        # the payment change holds from the next one (see _apply_payment_changes).
        self.leaving_paper = customers[np.isin(ids, policy.FEE_REMOVING_OFFERS)]
        self.settling = customers[np.isin(ids, policy.DEBT_OFFERS)]

    def _apply_payment_changes(self) -> None:
        """Accepted payment help, after the invoice it was offered on: no paper-invoice fee from
        the next invoice, the debt arranged. Applied before that invoice, the invoice the
        customer was reading would already show the outcome, and every model trained on it
        would learn the answer from the question."""
        self.paper[self.leaving_paper] = False
        self.ledger.settle(self.settling)
        self.leaving_paper = self.settling = np.zeros(0, dtype=np.int64)

    def _state(self, who: np.ndarray, as_of: np.ndarray) -> CustomerState:
        return CustomerState(
            as_of=as_of,
            plan=self.contracts.plan[who],
            monthly_fee=self.contracts.fee[who],
            binding_end=self.contracts.binding_end[who],
            signup_date=self.people.signup_date[who],
            birth_year=self.people.birth_year[who],
            data_gb=self.history["data_gb"][:, who],
            voice_minutes=self.history["voice_minutes"][:, who],
            roaming_data_gb=self.history["roaming_data_gb"][:, who],
            overage_sek=self.history["overage_sek"][:, who],
            invoice_fee_sek=self.invoice_fees[:, who],
            reminder_fee_sek=self.reminder_fees[:, who],
        )

    # -- value, churn and plan changes -------------------------------------------------------

    def _feel_and_leave(self, t: int, active: np.ndarray) -> None:
        """Move the felt price-value gap; some customers leave at the month's end."""
        offers, plans = self.offers, self.offers.plans
        end = self.timeline.end_of(t)
        traits = self.traits.take(active)
        available = offers.available(np.full(len(active), end), self.people.is_business[active])
        costs = plan_costs(
            offers,
            offers.new_customer_fee[plans],
            self.history["data_gb"][0, active],
            self.history["voice_minutes"][0, active],
            self.history["roaming_data_gb"][0, active],
        )
        fair = np.where(available[:, plans], costs, np.inf).min(axis=1)
        fees = np.where(self.paper[active], INVOICE_FEE_SEK, 0.0) + self.ledger.fee_on_next[active]
        plan = self.contracts.plan[active]
        above_new = np.maximum(self.contracts.fee[active] - offers.new_customer_fee[plan], 0.0)
        gap = behaviour.monthly_value_gap(
            self.usage_cost_last_month[active] + fees, fair, above_new, fees, traits
        )
        weight = behaviour.VALUE_GAP_WEIGHT
        self.value_gap[active] = (1 - weight) * self.value_gap[active] + weight * gap
        leave = behaviour.churn_probability(
            self.value_gap[active],
            traits,
            self.contracts.in_binding(active, end),
            months_between(self.people.signup_date[active], np.full(len(active), end)),
            self.ledger.in_collection(active, end),
        )
        # Someone who just said yes to an offer rarely leaves the same month.
        leave = np.where(self.pending_plan[active] != _NO_CHANGE, 0.2 * leave, leave)
        leaving = active[self.rng.random(len(active)) < leave]
        self.contracts.end(leaving, end)
        self.alive[leaving] = False

    def _change_plans(self, t: int, active: np.ndarray) -> None:
        """Accepted offers and plans customers pick themselves start next month."""
        offers = self.offers
        next_start = self.timeline.starts[t] + np.timedelta64(self.timeline.days_in(t), "D")
        staying = active[self.alive[active]]
        accepted = staying[self.pending_plan[staying] != _NO_CHANGE]
        # A plan that stops being sold before next month cannot start then.
        accepted = accepted[offers.valid_to[self.pending_plan[accepted]] >= next_start]

        candidates = staying[self.pending_plan[staying] == _NO_CHANGE]
        months_over = (np.nan_to_num(self.history["overage_sek"][:, candidates]) > 0).sum(axis=0)
        rate = (
            OWN_PLAN_CHANGE
            + OWN_PLAN_CHANGE_AFTER_OVERAGE
            * (months_over >= 2)
            * (self.traits.price_sensitivity[candidates])
        )
        movers = candidates[self.rng.random(len(candidates)) < rate]
        target = best_fitting_plan(
            offers,
            tuple(
                self.history[name][:, movers]
                for name in ("data_gb", "voice_minutes", "roaming_data_gb")
            ),  # type: ignore[arg-type]
            self.people.is_business[movers],
            next_start,
        )
        current = self.contracts.plan[movers]
        dearer = offers.monthly_fee[target] > self.contracts.fee[movers]
        bound = self.contracts.in_binding(movers, next_start)
        moving = (target != current) & (~bound | dearer)
        movers, target = movers[moving], target[moving]
        self.pending_plan[movers] = target
        self.pending_fee[movers] = offers.monthly_fee[target]

        changing = np.concatenate([accepted, movers])
        if len(changing):
            self.contracts.change(
                changing, self.pending_plan[changing], self.pending_fee[changing], next_start
            )

    # -- the end of the world -----------------------------------------------------------------

    def _finish(self) -> None:
        satisfaction = self._survey()
        self._write_customers(satisfaction)
        self._write_contracts()
        self._write_consents()
        self.folder.write(
            behaviour.CUSTOMER_TRAITS,
            {CUSTOMER_KEY: self.customer_ids, **self.traits.columns()},
            folder=GROUND_TRUTH_FOLDER,
        )

    def _survey(self) -> pa.Array:
        """Survey a sample of the last month's adult customers; return everyone's satisfaction."""
        rng, people, timeline = self.rng, self.people, self.timeline
        pool = self.used_last_month
        last = timeline.months - 1
        span_us = timeline.days_in(last) * 86_400_000_000
        surveyed_at = timeline.starts[last].astype("datetime64[us]") + (
            rng.random(len(pool)) * span_us
        ).astype(np.int64).astype("timedelta64[us]")
        surveyed_day = surveyed_at.astype("datetime64[D]")
        age = year_of(surveyed_day) - people.birth_year[pool]
        picked = (
            (rng.random(len(pool)) < SURVEY_SHARE)
            & (age >= ADULT_AGE)
            & (people.signup_date[pool] <= surveyed_day)
        )
        who, surveyed_at, surveyed_day, age = (
            pool[picked],
            surveyed_at[picked],
            surveyed_day[picked],
            age[picked],
        )
        plan = self.contracts.plan[who]
        answers = answer_survey(
            rng,
            Respondents(
                traits=self.traits.take(who),
                value_gap=self.value_gap[who],
                tenure_days=(surveyed_day - people.signup_date[who]).astype(np.int64),
                age=age,
                months_over_allowance=(np.nan_to_num(self.history["overage_sek"][:, who]) > 0).sum(
                    axis=0
                ),
                paper_invoice=self.paper[who],
                pays_above_new_customers_sek=np.maximum(
                    self.contracts.fee[who] - self.offers.new_customer_fee[plan], 0.0
                ),
            ),
        )
        order = np.argsort(who)
        self.folder.write(
            SURVEY_RESPONSES,
            {
                CUSTOMER_KEY: self.customer_ids.take(pa.array(who[order])),
                "surveyed_at": surveyed_at[order],
                **{q: answers.answers[q][order] for q in SURVEY_QUESTIONS},
            },
        )
        satisfaction = np.zeros(people.size, dtype=np.int64)
        satisfaction[who] = answers.satisfaction
        return pa.array(satisfaction, mask=satisfaction == 0)

    def _write_customers(self, satisfaction: pa.Array) -> None:
        people = self.people
        regions = pa.array([name for name, _ in REGIONS])
        segments = pa.array(["consumer", "business"])
        self.folder.write(
            CUSTOMERS,
            {
                CUSTOMER_KEY: self.customer_ids,
                "birth_year": people.birth_year,
                "signup_date": people.signup_date,
                "region": regions.take(pa.array(people.region)),
                "segment": segments.take(pa.array(people.is_business.astype(np.int64))),
                "satisfaction": satisfaction,
            },
        )

    def _write_contracts(self) -> None:
        rows = self.contracts.rows()
        self.folder.write(
            CONTRACTS,
            {
                CUSTOMER_KEY: self.customer_ids.take(pa.array(rows["customer"])),
                "plan_id": pa.array(self.offers.offer_ids).take(pa.array(rows["plan"])),
                "valid_from": rows["valid_from"],
                "valid_to": rows["valid_to"],
                "binding_end_date": rows["binding_end"],
                "monthly_fee_sek": rows["fee"],
            },
        )

    def _write_consents(self) -> None:
        rows = self.consents.rows()
        self.folder.write(
            CONSENTS,
            {
                CUSTOMER_KEY: self.customer_ids.take(pa.array(rows["customer"])),
                "purpose": pa.array(CONSENT_PURPOSES).take(pa.array(rows["purpose"])),
                "granted": rows["granted"],
                "updated_at": rows["updated_at"],
            },
        )
