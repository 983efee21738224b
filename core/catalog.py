"""The offer catalog (docs/data-contract.md, the catalog): a YAML file with one key, ``offers``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

OfferKind = Literal["plan", "addon", "loyalty", "payment_help"]


class LocalisedText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sv: str = Field(min_length=1)
    en: str = Field(min_length=1)

    def get(self, locale: str) -> str:
        return self.en if locale == "en" else self.sv


class Offer(BaseModel):
    """One catalog entry. ``None`` allowances mean unlimited."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    offer_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    kind: OfferKind
    title: LocalisedText
    monthly_fee_sek: float = Field(ge=0)
    new_customer_fee_sek: float | None = Field(default=None, ge=0)
    data_gb: float | None = Field(default=None, ge=0)
    voice_minutes: float | None = Field(default=None, ge=0)
    roaming_data_gb: float | None = Field(default=0.0, ge=0)
    binding_months: int = Field(default=0, ge=0)
    valid_from: dt.date
    valid_to: dt.date | None = None
    segments: tuple[Literal["consumer", "business"], ...] = ("consumer", "business")
    min_tenure_months: int = Field(default=0, ge=0)
    requires_good_standing: bool = True

    @model_validator(mode="after")
    def _dates_in_order(self) -> Offer:
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self

    @property
    def price_for_new_customers(self) -> float:
        """What a new customer pays today; the same as existing customers when not set."""
        if self.new_customer_fee_sek is None:
            return self.monthly_fee_sek
        return self.new_customer_fee_sek

    def is_valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    offers: tuple[Offer, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        seen: set[str] = set()
        for offer in self.offers:
            if offer.offer_id in seen:
                raise ValueError(f"offer_id {offer.offer_id} appears more than once")
            seen.add(offer.offer_id)
        return self

    def by_id(self) -> Mapping[str, Offer]:
        """The offers by id, read-only: built once, since the catalog is frozen."""
        return MappingProxyType(self._by_id)

    @property
    def plans(self) -> tuple[Offer, ...]:
        """The plans, in catalog order; every usage summary reads them."""
        return self._plans

    # Kept on first use (every decision reads them). Behind read-only accessors, since pydantic
    # would let a cached_property's name be assigned on a frozen model.
    @cached_property
    def _by_id(self) -> dict[str, Offer]:
        return {offer.offer_id: offer for offer in self.offers}

    @cached_property
    def _plans(self) -> tuple[Offer, ...]:
        return tuple(offer for offer in self.offers if offer.kind == "plan")


class CatalogError(ValueError):
    """The catalog file breaks the contract; the message names the file and the entry."""


def load_catalog(path: Path) -> Catalog:
    """Read and check the catalog; raise :class:`CatalogError` naming what is wrong."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CatalogError(f"{path}: catalog file not found") from error
    except yaml.YAMLError as error:
        raise CatalogError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict) or "offers" not in raw:
        raise CatalogError(f"{path}: expected one key 'offers' holding a list of offers")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = item["loc"]
            where = ".".join(str(part) for part in location)
            if len(location) >= 2 and location[0] == "offers" and isinstance(location[1], int):
                entry = raw["offers"][location[1]]
                offer_id = entry.get("offer_id") if isinstance(entry, dict) else None
                where = f"offer {offer_id or location[1]}: " + ".".join(
                    str(part) for part in location[2:]
                )
            problems.append(f"{where} {item['msg']}")
        raise CatalogError(f"{path}: " + "; ".join(problems)) from error
