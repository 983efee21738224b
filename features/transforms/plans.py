"""The catalog's plans as a table: what the contract and offer-attribute views read of each."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.catalog import Catalog


def plan_table(catalog: Catalog) -> pd.DataFrame:
    """Allowances (NaN = unlimited) and the new-customer price of every catalog entry."""

    def number(value: float | None) -> float:
        return np.nan if value is None else float(value)

    return pd.DataFrame(
        {
            "offer_id": [offer.offer_id for offer in catalog.offers],
            "data_gb": [number(offer.data_gb) for offer in catalog.offers],
            "voice_minutes": [number(offer.voice_minutes) for offer in catalog.offers],
            "roaming_data_gb": [number(offer.roaming_data_gb) for offer in catalog.offers],
            "new_customer_fee_sek": [offer.price_for_new_customers for offer in catalog.offers],
        }
    ).set_index("offer_id")
