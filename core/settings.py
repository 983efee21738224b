"""The one configuration object, read from ``OFFERS_*`` variables and a ``.env`` file.

It lives in the lowest stage so that every other stage can read it without importing upwards.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The roles an API key may have (serving/auth.py decides what each may call).
API_ROLES = ("renderer", "marketing", "consent", "admin")
# Shorter keys can be guessed; `make run` writes 24-character keys.
MIN_API_KEY_LENGTH = 16


class Settings(BaseSettings):
    """Every path, URL and knob, with embedded defaults that need no server."""

    model_config = SettingsConfigDict(
        env_prefix="OFFERS_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path("data/raw")
    catalog: Path = Path("catalog/offers.yaml")
    features_dir: Path = Field(
        default=Path("data/features"), description="Feature tables built from the raw tables."
    )
    feast_dir: Path = Field(
        default=Path("data/feast"), description="Embedded registry and SQLite online store."
    )
    online_store: str = Field(default="sqlite", description="`sqlite` or a `redis://` URL.")
    registry_url: str = Field(
        default="", description="Empty for a file registry, or a `postgresql://` URL."
    )
    offline_store: str = Field(default="file", description="`file` or `spark`.")
    database_url: str = Field(
        default="sqlite:///data/offers.db", description="Decision log, events and experiments."
    )
    database_timeout_ms: float = Field(
        default=2000.0,
        gt=0,
        description="Longest wait for one call to a PostgreSQL decision log on a request's path; "
        "past it the answer is 503 with Retry-After.",
    )
    database_cool_off_seconds: float = Field(
        default=5.0,
        gt=0,
        description="After a few failed calls in a row, how long every call to a PostgreSQL "
        "decision log is refused at once (503) before one call tries it again.",
    )
    api_keys: str = Field(default="", description="Comma list of key:role.")
    open_docs: bool = Field(
        default=True,
        description="Serve /docs, /redoc and /openapi.json without a key (set false in "
        "production when the API description should not be public).",
    )
    session_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Signs the pages' session cookies; empty: derived from OFFERS_API_KEYS.",
    )
    session_hours: float = Field(
        default=8.0, gt=0.0, le=24.0 * 30, description="How long a page session lasts."
    )
    sign_in_max_failures: int = Field(
        default=5,
        ge=1,
        description="Unknown keys a client address may enter at POST /sign-in within "
        "OFFERS_SIGN_IN_WINDOW_SECONDS before every sign-in from it is refused (429).",
    )
    sign_in_window_seconds: float = Field(
        default=300.0, gt=0.0, le=86_400.0, description="The window of failed sign-ins counted."
    )
    spark_master: str = "local[2]"
    invoice_run_slice_invoices: int = Field(
        default=50_000,
        ge=1,
        description="Invoices an invoice run decides, writes and can resume from at a time.",
    )
    mlflow_tracking_uri: str = Field(
        default="sqlite:///mlruns/mlflow.db",
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow's own variable; a SQLite file inside mlruns/ by default.",
    )
    mlflow_artifact_root: Path = Path("mlruns/artifacts")
    promote_margin: float = Field(
        default=0.002, ge=0.0, description="How much better a candidate must be to be promoted."
    )
    decline_cap_invoices: int = Field(
        default=3, ge=0, description="A declined offer is not shown again for this many invoices."
    )
    # The arbitration's objective (serving/decision/arbitration.py): acceptance × (weight_revenue
    # × revenue change + weight_retention × retention value + weight_customer × customer saving
    # + accepted_offer_value_sek) over horizon_months.
    weight_revenue: float = Field(default=1.0, ge=0.0, description="Weight of revenue change.")
    weight_retention: float = Field(
        default=1.0, ge=0.0, description="Weight of the revenue kept by lower churn risk."
    )
    weight_customer: float = Field(
        default=0.5, ge=0.0, description="Weight of what the customer saves."
    )
    horizon_months: int = Field(default=12, ge=1, le=60, description="The objective's horizon.")
    churn_reduction: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Share of churn risk an accepted saving removes."
    )
    accepted_offer_value_sek: float = Field(
        default=150.0,
        ge=0.0,
        description="What an accepted offer of positive money terms is worth beyond them (SEK).",
    )
    min_acceptance: float = Field(
        default=0.02, ge=0.0, le=1.0, description="No offer below this acceptance probability."
    )
    min_value_sek: float = Field(
        default=1.0, ge=0.0, description="No offer below this acceptance × value (SEK)."
    )
    upgrade_usage_share: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="An upgrade needs a recent month using this share of an allowance it raises.",
    )
    value_tolerance: float = Field(
        default=0.3,
        ge=0.0,
        lt=1.0,
        description="An offer whose acceptance × value is within this share of the best open "
        "offer's leads it when the customer is likelier to take it.",
    )
    exploration_share: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description="Share of model decisions that show a randomised order (true propensities).",
    )
    propensity_weight_cap: float = Field(
        default=0.0,
        ge=0.0,
        description="Train the ranker on 1 / logged propensity clipped at this weight (0: off).",
    )
    invoice_date_past_days: int = Field(
        default=400, ge=1, description="Oldest invoice_date a request may carry, in days."
    )
    invoice_date_future_days: int = Field(
        # Two months ahead, as the product contract has it, whichever two months they are.
        default=62,
        ge=0,
        description="Furthest invoice_date ahead of today a request may carry.",
    )
    feature_timeout_ms: float = Field(default=50.0, gt=0)
    model_poll_seconds: float = Field(
        default=30.0,
        ge=1.0,
        description="How often each serving worker asks the registry where `champion` points.",
    )
    # Model monitoring (training/drift.py): `offers monitor` and the drift gauges on /metrics.
    monitor_psi_warn: float = Field(
        default=0.1, gt=0.0, description="An input whose PSI reaches this is marked warn."
    )
    monitor_psi_alert: float = Field(
        default=0.25, gt=0.0, description="An input whose PSI reaches this is marked alert."
    )
    monitor_calibration_gap: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="Largest gap between predicted and observed acceptance (a share, 0.05 = 5 "
        "points) before a week is marked; alert when the 95 % interval also leaves it out.",
    )
    monitor_degraded_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Largest share of degraded answers that is ok."
    )
    monitor_min_decisions: int = Field(
        default=100, ge=1, description="Fewer model decisions than this: no input drift status."
    )
    monitor_min_offers: int = Field(
        default=50, ge=1, description="Fewer first-placed offers in a week: no calibration status."
    )
    monitor_window_days: int = Field(
        default=28, ge=1, le=400, description="The period /metrics' drift gauges look back over."
    )
    monitor_max_decisions: int = Field(
        default=5000,
        ge=100,
        description="At most this many of the newest decisions are read per computation.",
    )
    monitor_refresh_seconds: float = Field(
        default=300.0,
        ge=0.0,
        description="How often each API worker recomputes the drift gauges (0: never).",
    )
    max_request_bytes: int = 16 * 1024
    seed: int = 7

    @field_validator("online_store")
    @classmethod
    def _known_online_store(cls, value: str) -> str:
        if value != "sqlite" and not value.startswith(("redis://", "rediss://")):
            raise ValueError("OFFERS_ONLINE_STORE must be 'sqlite' or a redis:// URL")
        return value

    @field_validator("offline_store")
    @classmethod
    def _known_offline_store(cls, value: str) -> str:
        if value not in {"file", "spark"}:
            raise ValueError("OFFERS_OFFLINE_STORE must be 'file' or 'spark'")
        return value

    def api_key_roles(self) -> dict[str, str]:
        """Map each API key to its role. A malformed entry, a key listed twice or a key shorter
        than :data:`MIN_API_KEY_LENGTH` is an error, and no message shows any part of a key."""
        roles: dict[str, str] = {}
        first_seen: dict[str, int] = {}
        entries = [part.strip() for part in self.api_keys.split(",")]
        for number, entry in enumerate(filter(None, entries), start=1):
            key, sep, role = entry.rpartition(":")
            if not sep or not key or role not in API_ROLES:
                raise ValueError(
                    f"OFFERS_API_KEYS entry {number} must be key:role with role "
                    f"{', '.join(API_ROLES)}"
                )
            if len(key) < MIN_API_KEY_LENGTH:
                raise ValueError(
                    f"OFFERS_API_KEYS entry {number}: a key must be at least "
                    f"{MIN_API_KEY_LENGTH} characters"
                )
            if key in first_seen:
                raise ValueError(
                    f"OFFERS_API_KEYS entry {number} repeats the key of entry "
                    f"{first_seen[key]}: a key has one role"
                )
            first_seen[key] = number
            roles[key] = role
        return roles


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process."""
    settings = Settings()
    # MLflow reads its own variable; keep the two in step for libraries that call MLflow directly.
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    return settings
