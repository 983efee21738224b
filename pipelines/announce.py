"""Prints how to call the API that `make run` starts, creating local keys when none are set."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.columns import CUSTOMER_KEY

ENV_FILE = Path(".env")


def ensure_api_keys(env_file: Path = ENV_FILE) -> str:
    """Return a renderer key, writing fresh local keys to ``.env`` when none is configured."""
    from core.settings import Settings

    roles = Settings().api_key_roles()
    for key, role in roles.items():
        if role in {"renderer", "admin"}:
            return key
    renderer, marketing, consent, admin = (secrets.token_urlsafe(18) for _ in range(4))
    line = (
        f"OFFERS_API_KEYS={renderer}:renderer,{marketing}:marketing,{consent}:consent,"
        f"{admin}:admin\n"
    )
    existing = env_file.read_text(encoding="utf-8") if env_file.exists() else ""
    kept = "".join(
        row + "\n" for row in existing.splitlines() if not row.startswith("OFFERS_API_KEYS=")
    )
    # The keys are secrets: the file is readable and writable by its owner only, from its first
    # byte (created with that mode, and narrowed if it existed before).
    descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(kept + line)
    env_file.chmod(0o600)
    return renderer


# The example call's invoice when the world's invoices cannot be read: a made-up invoice of the
# simulated world's last billing month.
EXAMPLE_INVOICE_ID = "INV-2026-11-EXAMPLE"
EXAMPLE_INVOICE_DATE = "2026-11-30"


@dataclass(frozen=True)
class ExampleInvoice:
    invoice_id: str
    customer_id: str
    invoice_date: str  # YYYY-MM-DD


def example_invoice(data_dir: Path, features_dir: Path | None = None) -> ExampleInvoice:
    """The example call's invoice: a real one of the world's newest billing date, of a customer
    :func:`example_customer` picks among those billed then, so the answer and the preview
    describe an invoice the world holds; a made-up one when the invoices cannot be read."""
    import pandas as pd

    try:
        invoices = pd.read_parquet(
            data_dir / "invoices.parquet", columns=["invoice_id", CUSTOMER_KEY, "invoice_date"]
        )
    except (OSError, ValueError, KeyError):
        invoices = pd.DataFrame()
    if invoices.empty:
        customer = example_customer(data_dir, EXAMPLE_INVOICE_DATE, features_dir)
        return ExampleInvoice(EXAMPLE_INVOICE_ID, customer, EXAMPLE_INVOICE_DATE)
    days = pd.to_datetime(invoices["invoice_date"])
    newest = days.max()
    billed = invoices[days == newest]
    day = newest.date().isoformat()
    customer = example_customer(
        data_dir, day, features_dir, among=set(billed[CUSTOMER_KEY].astype(str))
    )
    own = billed.loc[billed[CUSTOMER_KEY].astype(str) == customer, "invoice_id"]
    if own.empty:
        return ExampleInvoice(EXAMPLE_INVOICE_ID, customer, EXAMPLE_INVOICE_DATE)
    return ExampleInvoice(str(own.iloc[0]), customer, day)


def example_customer(
    data_dir: Path,
    invoice_date: str = EXAMPLE_INVOICE_DATE,
    features_dir: Path | None = None,
    among: set[str] | None = None,
) -> str:
    """An adult customer whose latest consents allow personalised offers and who holds a contract
    on ``invoice_date`` (a customer who left long ago gets no invoice), for the example call.

    Among them, one who paid for usage above the plan's allowance in the last three months (the
    feature tables in ``features_dir``), when there is one: an invoice where an offer may be worth
    showing, so the example shows what an offer and its reasons look like. ``among``: only
    these customers (those billed on ``invoice_date``) may be the example, when one qualifies."""
    import pandas as pd

    try:
        consents = pd.read_parquet(data_dir / "consents.parquet")
        customers = pd.read_parquet(data_dir / "customers.parquet")
    except (OSError, ValueError):
        return "C0000001"
    latest = consents.sort_values("updated_at").groupby([CUSTOMER_KEY, "purpose"]).tail(1)
    granted = latest[latest["granted"]].groupby(CUSTOMER_KEY)["purpose"].agg(set)
    adults = set(customers.loc[customers["birth_year"] <= 1990, CUSTOMER_KEY])
    under_contract = _under_contract(data_dir, pd.Timestamp(invoice_date))
    qualifying = [
        str(customer_id)
        for customer_id, purposes in granted.items()
        if {"marketing", "profiling", "usage_insights"} <= purposes
        and customer_id in adults
        and (under_contract is None or customer_id in under_contract)
    ]
    if among is not None and any(customer_id in among for customer_id in qualifying):
        qualifying = [customer_id for customer_id in qualifying if customer_id in among]
    paying_overage = _paying_overage(features_dir) if features_dir is not None else set()
    for customer_id in qualifying:
        if customer_id in paying_overage:
            return customer_id
    if qualifying:
        return qualifying[0]
    return str(customers[CUSTOMER_KEY].iloc[0]) if len(customers) else "C0000001"


def _paying_overage(features_dir: Path) -> set[str]:
    """Customers whose usage features of the newest snapshot show overage paid in the last three
    months; none when the feature tables cannot be read."""
    import pandas as pd

    try:
        usage = pd.read_parquet(
            features_dir / "customer_usage.parquet",
            columns=[CUSTOMER_KEY, "event_timestamp", "overage_sek_avg_3m"],
        )
    except (OSError, ValueError, KeyError):
        return set()
    # The newest snapshot: a customer without a row there has left, and is no example anyway.
    newest = usage[usage["event_timestamp"] == usage["event_timestamp"].max()]
    return set(newest.loc[newest["overage_sek_avg_3m"] > 0, CUSTOMER_KEY].astype(str))


def _under_contract(data_dir: Path, day: Any) -> set[str] | None:
    """Customers with a contract valid on ``day``; None when the contracts cannot be read."""
    import pandas as pd

    try:
        contracts = pd.read_parquet(
            data_dir / "contracts.parquet", columns=[CUSTOMER_KEY, "valid_from", "valid_to"]
        )
    except (OSError, ValueError, KeyError):
        return None
    starts = pd.to_datetime(contracts["valid_from"])
    ends = pd.to_datetime(contracts["valid_to"])
    valid = (starts <= day) & (ends.isna() | (ends >= day))
    return set(contracts.loc[valid, CUSTOMER_KEY].astype(str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    from core.settings import Settings

    key = ensure_api_keys()
    settings = Settings()
    example = example_invoice(Path(settings.data_dir), features_dir=Path(settings.features_dir))
    base = f"http://{args.host}:{args.port}"
    sys.stdout.write(
        "\nThe API is starting on "
        f"{base} (keys in .env, OFFERS_API_KEYS). Ask for the offers of an invoice:\n\n"
        f"  curl -s -X POST {base}/v1/offers \\\n"
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"invoice_id": "{example.invoice_id}", '
        f'"customer_id": "{example.customer_id}", '
        f'"invoice_date": "{example.invoice_date}", "locale": "sv", "max_offers": 3}}\'\n\n'
        "The invoice as the customer will see it, in a browser (sign in with the same key):\n\n"
        f"  {base}/preview/invoices/{example.invoice_id}?customer_id={example.customer_id}"
        f"&invoice_date={example.invoice_date}&locale=en\n\n"
        f"  docs: {base}/docs   health: {base}/health/ready\n\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
