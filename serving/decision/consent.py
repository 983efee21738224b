"""The consent gate: which policy a decision may use, before any feature beyond consent is read."""

from __future__ import annotations

from typing import Literal

from serving.decision.inputs import ConsentState

Policy = Literal["model", "rules", "non_personalised", "holdout", "none", "fallback"]
REQUESTABLE = ("model", "rules", "non_personalised", "holdout")
MODEL_PREFIX = "model:"


def base_policy(requested: str) -> str:
    """``model:<version>`` is the model policy with a chosen scorer; other names stand as is."""
    name = "model" if requested.startswith(MODEL_PREFIX) else requested
    if name not in REQUESTABLE:
        raise ValueError(
            f"unknown policy {requested!r}; expected one of {REQUESTABLE} or model:<v>"
        )
    return name


def allowed_policy(requested: str, consent: ConsentState) -> Policy:
    """The policy consent allows; it only ever lowers what was asked for.

    No marketing consent, or an objection: ``none``. An experiment's holdout stays ``holdout``.
    Without profiling consent, or for anyone who may be under 18: ``non_personalised``.
    """
    name = base_policy(requested)
    if not consent.marketing or consent.objected:
        return "none"
    if name == "holdout":
        return "holdout"
    if not may_profile(consent) or name == "non_personalised":
        return "non_personalised"
    return "model" if name == "model" else "rules"


def may_profile(consent: ConsentState) -> bool:
    """Profiling features may be read and used: consent given by an adult."""
    return consent.profiling and consent.is_adult


def detail_level(consent: ConsentState) -> Literal["basic", "detailed"]:
    """The usage summary's depth: trends and plan-fit insight only with ``usage_insights``."""
    return "detailed" if consent.usage_insights else "basic"
