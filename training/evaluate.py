"""Evaluation on the validation period: overall, per offer and per slice, against baselines.

The acceptance model is compared with two baselines on the same decisions:

- ``popularity``: each offer's acceptance rate over the training period (the same for everyone),
- ``rules``: best plan fit first (the monthly saving on the customer's own usage), turned into a
  probability by a Platt fit on the training period so its log loss and calibration can be read.

Off-policy value: the logging policy showed offers with known propensities; IPS and self-normalised
IPS estimate what a policy that shows each scorer's top offer would have earned, next to what the
logging policy actually earned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY
from training.calibration import Calibrator, fit_platt
from training.metrics import (
    effective_sample_size,
    expected_calibration_error,
    hit_rate_at_k,
    ips_value,
    lift_at_top,
    log_loss,
    ndcg_at_k,
    reliability_table,
    roc_auc,
    snips_value,
)

DECISION = "decision_id"
OFFER = "offer_id"
CUSTOMER = CUSTOMER_KEY
LABEL = "label"
PROPENSITY = "propensity"
RANK = "rank"
RULES_SCORE = "fit_saving_sek_per_month"

MODEL = "model"
POPULARITY = "popularity"
RULES = "rules"
MIN_SLICE_ROWS = 50

# Slices of customers the report must show separately. Each maps a feature frame to a mask.
SliceRule = Callable[[pd.DataFrame], pd.Series]
SLICES: dict[str, SliceRule] = {
    "tenure_under_2y": lambda f: f["tenure_months"] < 24,
    "tenure_2y_plus": lambda f: f["tenure_months"] >= 24,
    "age_18_29": lambda f: f["age"].between(18, 29),
    "age_30_plus": lambda f: f["age"] >= 30,
    "consent_profiling": lambda f: f["consent_profiling"] == 1,
    "consent_no_profiling": lambda f: f["consent_profiling"] != 1,
    "consent_usage_insights": lambda f: f["consent_usage_insights"] == 1,
    "consent_no_usage_insights": lambda f: f["consent_usage_insights"] != 1,
}


def _safe(metric: Callable[[], float]) -> float | None:
    """A metric's value, or None where it is undefined here (one class, nothing relevant)."""
    try:
        value = metric()
    except ValueError:
        return None
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class PopularityBaseline:
    """Acceptance rate per offer in the training period; unseen offers get the overall rate."""

    rates: dict[str, float]
    overall: float

    @classmethod
    def fit(
        cls, offers: pd.Series, labels: pd.Series | np.ndarray, prior_rows: int = 20
    ) -> PopularityBaseline:
        frame = pd.DataFrame({"offer": offers.to_numpy(), "label": np.asarray(labels, dtype=float)})
        overall = float(frame["label"].mean())
        grouped = frame.groupby("offer")["label"].agg(["sum", "size"])
        # A few prior rows keep a rarely shown offer from getting an extreme rate.
        rates = (grouped["sum"] + prior_rows * overall) / (grouped["size"] + prior_rows)
        return cls(rates={str(k): float(v) for k, v in rates.items()}, overall=overall)

    def predict(self, offers: pd.Series) -> np.ndarray:
        return offers.map(self.rates).fillna(self.overall).to_numpy(dtype=float)


def segment_offer_acceptance(
    rows: pd.DataFrame, prior_rows: int = 20
) -> dict[str, dict[str, float]]:
    """Acceptance when shown first, per customer segment and offer, from logged rows.

    What a non-personalised invoice may be ordered by: the same figure for everyone in a segment,
    learnt from what the segment as a whole accepted, never from the customer's own data. Rows
    logged lower on the invoice are left out (fewer customers read that far). Each rate is pulled
    towards the offer's rate over all segments by ``prior_rows`` rows, so an offer a segment
    rarely saw does not get an extreme rate. Needs ``offer_id``, ``label``, ``segment`` (or
    ``segment_is_business``) and, when present, ``rank``.
    """
    if "rank" in rows:
        rows = rows[rows["rank"].astype(float) == 1.0]
    if rows.empty:
        return {}
    if "segment" in rows:
        segments = rows["segment"].astype(str).to_numpy()
    else:
        segments = np.where(
            rows["segment_is_business"].astype(float).to_numpy() > 0.5, "business", "consumer"
        )
    offers = rows["offer_id"].astype(str)
    overall = PopularityBaseline.fit(offers, rows[LABEL], prior_rows)
    frame = pd.DataFrame(
        {
            "segment": segments,
            "offer": offers.to_numpy(),
            "label": rows[LABEL].to_numpy(dtype=float),
        }
    )
    grouped = frame.groupby(["segment", "offer"])["label"].agg(["sum", "size"])
    rates: dict[str, dict[str, float]] = {}
    for (segment, offer), accepted, shown in zip(
        grouped.index, grouped["sum"], grouped["size"], strict=True
    ):
        prior = overall.rates.get(str(offer), overall.overall)
        rates.setdefault(str(segment), {})[str(offer)] = round(
            float((accepted + prior_rows * prior) / (shown + prior_rows)), 6
        )
    return rates


@dataclass(frozen=True)
class RulesBaseline:
    """Best plan fit first: the saving on the customer's own usage, Platt-scaled to probability."""

    platt: Calibrator
    scale: float

    @classmethod
    def fit(cls, savings: pd.Series, labels: pd.Series | np.ndarray) -> RulesBaseline:
        values = savings.fillna(0.0).to_numpy(dtype=float)
        scale = float(np.std(values)) or 1.0
        return cls(platt=fit_platt(values / scale, np.asarray(labels, dtype=float)), scale=scale)

    def score(self, savings: pd.Series) -> np.ndarray:
        return savings.fillna(0.0).to_numpy(dtype=float)

    def predict(self, savings: pd.Series) -> np.ndarray:
        return self.platt.apply(self.score(savings) / self.scale)


def ranking_metrics(
    labels: np.ndarray, probabilities: np.ndarray, scores: np.ndarray, groups: np.ndarray
) -> dict[str, float | None]:
    """NDCG@3 and hit rate@1 from the ranking score; AUC, log loss and ECE from the probability.

    The ranking metrics count decisions that showed two or more offers: with one offer there is
    nothing to rank, and every scorer would score 1.
    """
    codes, _ = pd.factorize(groups)
    ranked = np.bincount(codes)[codes] >= 2
    return {
        "ndcg_at_3": _safe(lambda: ndcg_at_k(labels[ranked], scores[ranked], codes[ranked], k=3)),
        "hit_rate_at_1": _safe(
            lambda: hit_rate_at_k(labels[ranked], scores[ranked], codes[ranked], k=1)
        ),
        "auc": _safe(lambda: roc_auc(labels, scores)),
        "log_loss": _safe(lambda: log_loss(labels, probabilities)),
        "ece": _safe(lambda: expected_calibration_error(labels, probabilities)),
    }


@dataclass
class OffPolicyValue:
    """Acceptance of the first-ranked offer per decision: the logging policy's observed value and,
    for each scorer's policy "show my top candidate first", its IPS and SNIPS estimates."""

    logging_policy_value: float
    decisions: int
    estimates: dict[str, dict[str, float | None]]
    candidate_set: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "logging_policy_value": self.logging_policy_value,
            "decisions": self.decisions,
            "candidate_set": self.candidate_set,
            "estimates": self.estimates,
        }


def first_ranked(logged: pd.DataFrame) -> pd.DataFrame:
    """Each decision's first-ranked logged offer with its propensity and outcome."""
    first = logged[logged[RANK] == logged.groupby(DECISION)[RANK].transform("min")]
    return first.drop_duplicates(DECISION)[[DECISION, OFFER, PROPENSITY, LABEL]]


def top_choice_probability(
    candidates: pd.DataFrame, score_column: str, decisions: pd.Series, offers: pd.Series
) -> np.ndarray:
    """Probability that "show the top-scored candidate first" picks ``offers[i]`` in
    ``decisions[i]``; tied top scores share the choice evenly."""
    frame = candidates[[DECISION, OFFER, score_column]]
    best = frame.groupby(DECISION)[score_column].transform("max")
    top = frame[frame[score_column] == best]
    ties = top.groupby(DECISION)[OFFER].transform("size")
    share = pd.Series(1.0 / ties.to_numpy(), index=pd.MultiIndex.from_frame(top[[DECISION, OFFER]]))
    share = share[~share.index.duplicated()]
    wanted = pd.MultiIndex.from_arrays([decisions.to_numpy(), offers.to_numpy()])
    return share.reindex(wanted).fillna(0.0).to_numpy(dtype=float)


def _estimates(
    rewards: np.ndarray, target: np.ndarray, propensity: np.ndarray
) -> dict[str, float | None]:
    return {
        "ips": _safe(lambda: ips_value(rewards, target, propensity)),
        "snips": _safe(lambda: snips_value(rewards, target, propensity)),
        "effective_sample_size": _safe(lambda: effective_sample_size(target, propensity)),
        "agreement_with_logging": float(target.mean()) if len(target) else None,
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(key): value for key, value in row.items()} for row in frame.to_dict("records")]


def off_policy_value(
    logged: pd.DataFrame,
    candidates: pd.DataFrame,
    score_columns: Mapping[str, str],
    candidate_set: str = "",
) -> OffPolicyValue:
    """IPS and SNIPS of each scorer's policy "show the top-scored candidate first".

    ``logged`` holds the validation rows (decision, offer, rank, propensity, label): a decision's
    first-ranked offer, the logging policy's probability of putting it first and its outcome are
    one logged action. The customer reads from the top, so the first offer's outcome does not
    depend on what is shown below it. ``candidates`` holds every offer each policy could choose
    from per decision, with one score column per scorer. An offer the logging policy never puts
    first earns nothing in the estimate, so a scorer that prefers such offers is estimated low.
    """
    first = first_ranked(logged)
    usable = first[first[PROPENSITY].notna() & (first[PROPENSITY] > 0)]
    usable = usable[usable[DECISION].isin(candidates[DECISION].unique())]
    rewards = usable[LABEL].to_numpy(dtype=float)
    propensity = usable[PROPENSITY].to_numpy(dtype=float)
    estimates: dict[str, dict[str, float | None]] = {}
    for name, column in score_columns.items():
        target = top_choice_probability(candidates, column, usable[DECISION], usable[OFFER])
        estimates[name] = _estimates(rewards, target, propensity)
    return OffPolicyValue(
        logging_policy_value=float(usable[LABEL].mean()) if len(usable) else float("nan"),
        decisions=len(usable),
        estimates=estimates,
        candidate_set=candidate_set,
    )


@dataclass
class RankerEvaluation:
    """The acceptance model's evaluation report on the validation period."""

    overall: dict[str, dict[str, float | None]]
    per_offer: list[dict[str, Any]]
    per_slice: dict[str, dict[str, Any]]
    off_policy: OffPolicyValue
    reliability: list[dict[str, Any]]
    rows: int
    decisions: int
    decisions_with_acceptance: int
    extra: dict[str, Any] = field(default_factory=dict)

    def primary(self) -> float:
        value = self.overall[MODEL]["ndcg_at_3"]
        return float("nan") if value is None else value

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "decisions": self.decisions,
            "decisions_with_acceptance": self.decisions_with_acceptance,
            "overall": self.overall,
            "per_offer": self.per_offer,
            "per_slice": self.per_slice,
            "off_policy": self.off_policy.as_dict(),
            "reliability": self.reliability,
            **self.extra,
        }

    def flat_metrics(self, prefix: str = "val") -> dict[str, float]:
        """Figures for MLflow: ``val_<scorer>_<metric>``, and ``val_<metric>`` for the model."""
        figures: dict[str, float] = {}
        for scorer, metrics in self.overall.items():
            for metric, value in metrics.items():
                if value is not None:
                    figures[f"{prefix}_{scorer}_{metric}"] = value
                    if scorer == MODEL:
                        figures[f"{prefix}_{metric}"] = value
        for scorer, estimate in self.off_policy.estimates.items():
            for metric in ("ips", "snips"):
                if estimate[metric] is not None:
                    figures[f"{prefix}_{scorer}_{metric}"] = float(estimate[metric])  # type: ignore[arg-type]
        figures[f"{prefix}_logging_policy_value"] = self.off_policy.logging_policy_value
        for slice_name, entry in self.per_slice.items():
            for metric in ("ndcg_at_3", "auc"):
                value = entry["metrics"][MODEL][metric]
                if value is not None:
                    figures[f"{prefix}_slice_{slice_name}_{metric}"] = value
        return figures


def slice_masks(frame: pd.DataFrame) -> Iterator[tuple[str, np.ndarray]]:
    """Each slice of ``SLICES`` the frame has the columns for, with enough rows to report."""
    for slice_name, rule in SLICES.items():
        try:
            mask = rule(frame).fillna(False).to_numpy(dtype=bool)
        except KeyError:
            continue
        if mask.sum() >= MIN_SLICE_ROWS:
            yield slice_name, mask


def evaluate_ranker(
    frame: pd.DataFrame,
    probabilities: Mapping[str, np.ndarray],
    ranking_scores: Mapping[str, np.ndarray] | None = None,
    off_policy: OffPolicyValue | None = None,
) -> RankerEvaluation:
    """Metrics of every scorer on the same validation rows, overall, per offer and per slice.

    ``probabilities`` holds each scorer's acceptance probability per row; ``ranking_scores`` the
    score it ranks by when that differs (the rules baseline ranks by the saving itself).
    """
    if LABEL not in frame or DECISION not in frame:
        raise KeyError(f"evaluation frame needs {LABEL!r} and {DECISION!r}")
    scores = {
        name: np.asarray((ranking_scores or {}).get(name, p)) for name, p in probabilities.items()
    }
    labels = frame[LABEL].to_numpy(dtype=float)
    groups = frame[DECISION].to_numpy()

    def metrics_on(mask: np.ndarray) -> dict[str, dict[str, float | None]]:
        return {
            name: ranking_metrics(
                labels[mask], np.asarray(p)[mask], scores[name][mask], groups[mask]
            )
            for name, p in probabilities.items()
        }

    everything = np.ones(len(frame), dtype=bool)
    overall = metrics_on(everything)

    per_offer = []
    model_p = np.asarray(probabilities[MODEL])

    def offer_auc(index: np.ndarray) -> float | None:
        return _safe(lambda: roc_auc(labels[index], model_p[index]))

    for offer_id, index in frame.groupby(OFFER).indices.items():
        offer_labels = labels[index]
        per_offer.append(
            {
                "offer_id": str(offer_id),
                "rows": len(index),
                "acceptance_rate": float(offer_labels.mean()),
                "model_mean_probability": float(model_p[index].mean()),
                "model_auc": offer_auc(np.asarray(index)),
            }
        )

    per_slice: dict[str, dict[str, Any]] = {}
    for slice_name, mask in slice_masks(frame):
        per_slice[slice_name] = {
            "rows": int(mask.sum()),
            "decisions": int(pd.Series(groups[mask]).nunique()),
            "acceptance_rate": float(labels[mask].mean()),
            "metrics": metrics_on(mask),
        }

    decision_accepts = pd.Series(labels).groupby(groups).max()
    return RankerEvaluation(
        overall=overall,
        per_offer=sorted(per_offer, key=lambda row: -row["rows"]),
        per_slice=per_slice,
        off_policy=off_policy or OffPolicyValue(float("nan"), 0, {}),
        reliability=_records(reliability_table(labels, model_p)),
        rows=len(frame),
        decisions=int(decision_accepts.size),
        decisions_with_acceptance=int((decision_accepts > 0).sum()),
    )


@dataclass
class ChurnEvaluation:
    """The churn model's evaluation report on the validation period."""

    overall: dict[str, float | None]
    per_slice: dict[str, dict[str, Any]]
    reliability: list[dict[str, Any]]
    rows: int
    churn_rate: float
    extra: dict[str, Any] = field(default_factory=dict)

    def primary(self) -> float:
        value = self.overall["auc"]
        return float("nan") if value is None else value

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "churn_rate": self.churn_rate,
            "overall": self.overall,
            "per_slice": self.per_slice,
            "reliability": self.reliability,
            **self.extra,
        }

    def flat_metrics(self, prefix: str = "val") -> dict[str, float]:
        figures = {f"{prefix}_{k}": v for k, v in self.overall.items() if v is not None}
        for slice_name, entry in self.per_slice.items():
            if entry["auc"] is not None:
                figures[f"{prefix}_slice_{slice_name}_auc"] = entry["auc"]
        return figures


def churn_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    return {
        "auc": _safe(lambda: roc_auc(labels, probabilities)),
        "top_decile_lift": _safe(lambda: lift_at_top(labels, probabilities, 0.1)),
        "log_loss": _safe(lambda: log_loss(labels, probabilities)),
        "ece": _safe(lambda: expected_calibration_error(labels, probabilities)),
    }


def evaluate_churn(frame: pd.DataFrame, probabilities: np.ndarray) -> ChurnEvaluation:
    """AUC, lift in the top decile, log loss and ECE, overall and per slice."""
    labels = frame[LABEL].to_numpy(dtype=float)
    p = np.asarray(probabilities, dtype=float)
    per_slice: dict[str, dict[str, Any]] = {}
    for slice_name, mask in slice_masks(frame):
        per_slice[slice_name] = {
            "rows": int(mask.sum()),
            "churn_rate": float(labels[mask].mean()),
            **churn_metrics(labels[mask], p[mask]),
        }
    return ChurnEvaluation(
        overall=churn_metrics(labels, p),
        per_slice=per_slice,
        reliability=_records(reliability_table(labels, p)),
        rows=len(frame),
        churn_rate=float(labels.mean()),
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _report_head(model: str, context: Mapping[str, Any]) -> list[str]:
    """A report's title and its context as a list (what was trained on, and how)."""
    lines = [f"# {model}: evaluation on the validation period", ""]
    lines += [
        f"- {key}: {_fmt(value)}"
        for key, value in context.items()
        if not isinstance(value, (list, dict))
    ]
    return lines


def ranker_markdown(evaluation: RankerEvaluation, context: Mapping[str, Any]) -> str:
    """The acceptance model's report for people, as Markdown."""
    lines = _report_head("offer-ranker", context)
    lines += [
        f"- validation rows: {evaluation.rows}, decisions: {evaluation.decisions} "
        f"({evaluation.decisions_with_acceptance} with an acceptance)",
        "",
        "## Overall",
        "",
        "NDCG@3 and hit rate@1 are means over decisions that showed two or more offers and had an "
        "acceptance; AUC, log loss and ECE are over every shown offer.",
        "",
        "| scorer | NDCG@3 | hit rate@1 | AUC | log loss | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for scorer, m in evaluation.overall.items():
        lines.append(
            f"| {scorer} | {_fmt(m['ndcg_at_3'])} | {_fmt(m['hit_rate_at_1'])} | {_fmt(m['auc'])} "
            f"| {_fmt(m['log_loss'])} | {_fmt(m['ece'])} |"
        )
    opv = evaluation.off_policy
    lines += [
        "",
        "## Off-policy value of showing the top offer first",
        "",
        f"Logging policy's observed acceptance of first-ranked offers: "
        f"{_fmt(opv.logging_policy_value)} over {opv.decisions} decisions. "
        f"Candidates: {opv.candidate_set or 'not given'}.",
        "",
        "| scorer | IPS | SNIPS | effective sample size | agrees with logged first offer |",
        "|---|---|---|---|---|",
    ]
    for scorer, estimate in opv.estimates.items():
        lines.append(
            f"| {scorer} | {_fmt(estimate['ips'])} | {_fmt(estimate['snips'])} "
            f"| {_fmt(estimate['effective_sample_size'])} "
            f"| {_fmt(estimate['agreement_with_logging'])} |"
        )
    lines += ["", "## Per slice", "", "| slice | rows | scorer | NDCG@3 | hit@1 | AUC | ECE |"]
    lines.append("|---|---|---|---|---|---|---|")
    for slice_name, entry in evaluation.per_slice.items():
        for scorer, m in entry["metrics"].items():
            lines.append(
                f"| {slice_name} | {entry['rows']} | {scorer} | {_fmt(m['ndcg_at_3'])} "
                f"| {_fmt(m['hit_rate_at_1'])} | {_fmt(m['auc'])} | {_fmt(m['ece'])} |"
            )
    lines += ["", "## Per offer (model)", "", "| offer | rows | acceptance | mean p | AUC |"]
    lines.append("|---|---|---|---|---|")
    for row in evaluation.per_offer:
        lines.append(
            f"| {row['offer_id']} | {row['rows']} | {_fmt(row['acceptance_rate'])} "
            f"| {_fmt(row['model_mean_probability'])} | {_fmt(row['model_auc'])} |"
        )
    lines += _extra_markdown(evaluation.extra)
    return "\n".join(lines) + "\n"


def churn_markdown(evaluation: ChurnEvaluation, context: Mapping[str, Any]) -> str:
    """The churn model's report for people, as Markdown."""
    lines = _report_head("churn-risk", context)
    lines += [
        f"- validation customer-months: {evaluation.rows}, churn within 3 months: "
        f"{evaluation.churn_rate:.4f}",
        "",
        "| AUC | top-decile lift | log loss | ECE |",
        "|---|---|---|---|",
        "| "
        + " | ".join(
            _fmt(evaluation.overall[k]) for k in ("auc", "top_decile_lift", "log_loss", "ece")
        )
        + " |",
        "",
        "## Per slice",
        "",
        "| slice | rows | churn rate | AUC | top-decile lift | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for slice_name, entry in evaluation.per_slice.items():
        lines.append(
            f"| {slice_name} | {entry['rows']} | {_fmt(entry['churn_rate'])} "
            f"| {_fmt(entry['auc'])} "
            f"| {_fmt(entry['top_decile_lift'])} | {_fmt(entry['ece'])} |"
        )
    lines += _extra_markdown(evaluation.extra)
    return "\n".join(lines) + "\n"


def _extra_markdown(extra: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    tradeoff = extra.get("model_size_tradeoff")
    if tradeoff:
        lines += [
            "",
            "## Model size against explanation cost (tune set)",
            "",
            "| objective | budget | leaves | depth | trees | training rows | primary metric "
            "| pred_contrib ms (3 rows) | chosen |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in tradeoff:
            metric = row.get("tune_ndcg_at_3", row.get("tune_auc"))
            lines.append(
                f"| {row['objective']} | {row['budget']} | {row['num_leaves']} "
                f"| {row['max_depth']} "
                f"| {row['trees']} | {row.get('train_rows', '')} | {_fmt(metric)} "
                f"| {_fmt(row['pred_contrib_ms_3_rows'])} "
                f"| {'yes' if row['chosen'] else ''} |"
            )
    calibration = extra.get("calibration")
    if calibration:
        lines += [
            "",
            "## Calibration (tune set, cross-fitted)",
            "",
            "| calibrator | log loss | ECE |",
        ]
        lines.append("|---|---|---|")
        for kind, figures in calibration["candidates"].items():
            lines.append(f"| {kind} | {_fmt(figures['log_loss'])} | {_fmt(figures['ece'])} |")
        lines.append(f"\nChosen: {calibration['chosen']}.")
    oracle = extra.get("oracle")
    if oracle:
        lines += [
            "",
            "## Oracle check (simulated world)",
            "",
            "| policy | expected acceptance of the top offer |",
        ]
        lines.append("|---|---|")
        for policy, value in oracle.get("expected_acceptance", {}).items():
            lines.append(f"| {policy} | {_fmt(value)} |")
    return lines


def to_json(payload: Mapping[str, Any]) -> str:
    """JSON with NaN written as null, so any reader can parse it."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    return json.dumps(clean(payload), indent=2, sort_keys=False) + "\n"
