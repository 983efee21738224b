"""The simulated world's hidden truth, for evaluation only: how likely would a customer accept?

Evaluation code (never training code) calls :func:`expected_acceptance` to score any policy's top
offer by the simulator's own acceptance model. The customer's situation at ``as_of`` is rebuilt
from the written tables exactly as the simulator saw it, and the latent traits come from
``_ground_truth/customer_traits.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.calendar import month_index
from core.catalog import Catalog
from core.columns import CUSTOMER_KEY
from core.contract import CONTRACTS, CUSTOMERS, INVOICES, USAGE_MONTHLY
from core.plan_fit import FIT_MONTHS
from core.tables import read_table
from pipelines.simulation.behaviour import (
    CUSTOMER_TRAITS,
    Behaviour,
    Traits,
    acceptance_probability,
)
from pipelines.simulation.observables import CustomerState, offer_context
from pipelines.simulation.offers import OfferArrays

PAIR_COLUMNS = ("customer_id", "offer_id", "as_of")


def _as_dates(values: pd.Series) -> np.ndarray:
    """Dates or UTC timestamps as ``datetime64[D]`` (a timestamp's UTC calendar day)."""
    stamps = pd.to_datetime(values, utc=True).dt.tz_convert(None)
    return stamps.to_numpy().astype("datetime64[D]")


def _examples(values: pd.Series) -> str:
    return ", ".join(map(str, values.unique()[:5]))


def _history(
    frame: pd.DataFrame,
    month_column: str,
    columns: tuple[str, ...],
    customers: np.ndarray,
    months: np.ndarray,
) -> dict[str, np.ndarray]:
    """``[FIT_MONTHS, n]`` per column: the months before each ``months`` entry, newest first."""
    keyed = frame.assign(_month=month_index(_as_dates(frame[month_column])))
    summed = keyed.groupby([CUSTOMER_KEY, "_month"])[list(columns)].sum(min_count=1)
    result = {column: np.full((FIT_MONTHS, len(customers)), np.nan) for column in columns}
    for back in range(1, FIT_MONTHS + 1):
        key = pd.MultiIndex.from_arrays([customers, months - back])
        found = summed.reindex(key)
        for column in columns:
            result[column][back - 1] = found[column].to_numpy(dtype=float)
    return result


def customer_states(
    data_dir: Path, customer_ids: np.ndarray, as_of: np.ndarray, offers: OfferArrays
) -> CustomerState:
    """Each customer's situation at ``as_of`` (dates), read from the tables in ``data_dir``."""
    customers = read_table(data_dir, CUSTOMERS).set_index(CUSTOMER_KEY)
    unknown = ~pd.Index(customer_ids).isin(customers.index)
    if unknown.any():
        raise ValueError(
            f"customers not in {data_dir}: {_examples(pd.Series(customer_ids[unknown]))}"
        )
    known = customers.loc[customer_ids]

    contracts = read_table(data_dir, CONTRACTS)
    contracts["valid_from"] = _as_dates(contracts["valid_from"]).astype("datetime64[ns]")
    asked = pd.DataFrame(
        {
            CUSTOMER_KEY: customer_ids,
            "as_of": as_of.astype("datetime64[ns]"),
            "_row": np.arange(len(customer_ids)),
        }
    )
    current = pd.merge_asof(
        asked.sort_values("as_of"),
        contracts.sort_values("valid_from"),
        left_on="as_of",
        right_on="valid_from",
        by=CUSTOMER_KEY,
    ).sort_values("_row")
    missing = current["plan_id"].isna()
    if missing.any():
        raise ValueError(
            f"no contract at as_of for customers: {_examples(current.loc[missing, 'customer_id'])}"
        )

    months = month_index(as_of)
    usage = _history(
        read_table(data_dir, USAGE_MONTHLY),
        "month",
        ("data_gb", "voice_minutes", "roaming_data_gb", "overage_sek"),
        customer_ids,
        months,
    )
    fees = _history(
        read_table(data_dir, INVOICES),
        "invoice_date",
        ("invoice_fee_sek", "reminder_fee_sek"),
        customer_ids,
        months,
    )
    return CustomerState(
        as_of=as_of,
        plan=offers.indices(current["plan_id"].to_numpy()),
        monthly_fee=current["monthly_fee_sek"].to_numpy(dtype=float),
        binding_end=current["binding_end_date"].to_numpy().astype("datetime64[D]"),
        signup_date=_as_dates(known["signup_date"]),
        birth_year=known["birth_year"].to_numpy(dtype=np.int64),
        data_gb=usage["data_gb"],
        voice_minutes=usage["voice_minutes"],
        roaming_data_gb=usage["roaming_data_gb"],
        overage_sek=usage["overage_sek"],
        invoice_fee_sek=fees["invoice_fee_sek"],
        reminder_fee_sek=fees["reminder_fee_sek"],
    )


def expected_acceptance(
    ground_truth_dir: Path, pairs: pd.DataFrame, data_dir: Path, catalog: Catalog
) -> np.ndarray:
    """The hidden probability that each customer accepts the offer shown first on ``as_of``.

    ``pairs`` has columns customer_id, offer_id and as_of (a date or UTC timestamp); the result
    is aligned with its rows.
    """
    lacking = [column for column in PAIR_COLUMNS if column not in pairs.columns]
    if lacking:
        raise ValueError(f"pairs lack the columns {lacking}; expected {list(PAIR_COLUMNS)}")
    if pairs.empty:
        return np.zeros(0)
    offers = OfferArrays.from_catalog(catalog)
    offer = offers.indices(pairs["offer_id"].to_numpy())
    if (offer < 0).any():
        raise ValueError(f"offers not in the catalog: {_examples(pairs['offer_id'][offer < 0])}")

    as_of = _as_dates(pairs["as_of"])
    keys = pd.DataFrame({"customer_id": pairs["customer_id"].to_numpy(), "as_of": as_of})
    unique = keys.drop_duplicates().reset_index(drop=True)
    row = pd.MultiIndex.from_frame(unique).get_indexer(pd.MultiIndex.from_frame(keys))
    state = customer_states(
        Path(data_dir),
        unique[CUSTOMER_KEY].to_numpy(dtype=object),
        unique["as_of"].to_numpy().astype("datetime64[D]"),
        offers,
    )

    traits_frame = pd.read_parquet(Path(ground_truth_dir) / CUSTOMER_TRAITS.file_name)
    traits = Traits.from_frame(
        traits_frame.set_index(CUSTOMER_KEY).loc[pairs[CUSTOMER_KEY].to_numpy()]
    )
    ctx = offer_context(state, row, offer, offers)
    return acceptance_probability(ctx, traits, offers, Behaviour.read(Path(ground_truth_dir)))
