"""The ``offer_attributes`` view: one row per catalog entry at 00:00 UTC on its ``valid_from``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.columns import EVENT_TIMESTAMP, OFFER_KEY
from core.plan_fit import OFFER_KIND_CODES, offer_identity_code
from features.transforms.dates import utc_timestamps
from features.transforms.frames import conform
from features.transforms.plans import plan_table
from features.views import OFFER_ATTRIBUTES


def offer_features(catalog: Catalog) -> pd.DataFrame:
    """Each catalog entry's attributes from its ``valid_from``; NaN allowance = unlimited."""
    plans = plan_table(catalog)
    out: dict[str, Any] = {
        OFFER_KEY: [offer.offer_id for offer in catalog.offers],
        EVENT_TIMESTAMP: utc_timestamps(
            np.array([offer.valid_from for offer in catalog.offers], dtype="datetime64[D]")
        ),
        "offer_kind_code": [OFFER_KIND_CODES[offer.kind] for offer in catalog.offers],
        "offer_monthly_fee_sek": [offer.monthly_fee_sek for offer in catalog.offers],
        "offer_new_customer_fee_sek": plans["new_customer_fee_sek"].to_numpy(),
        "offer_data_gb": plans["data_gb"].to_numpy(),
        "offer_voice_minutes": plans["voice_minutes"].to_numpy(),
        "offer_roaming_data_gb": plans["roaming_data_gb"].to_numpy(),
        "offer_binding_months": [offer.binding_months for offer in catalog.offers],
        "offer_min_tenure_months": [offer.min_tenure_months for offer in catalog.offers],
        "offer_identity_code": [offer_identity_code(offer.offer_id) for offer in catalog.offers],
    }
    return conform(out, OFFER_KEY, OFFER_ATTRIBUTES)
