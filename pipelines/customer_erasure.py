"""``offers customers erase ID``: one customer removed from the decision log and the online store.

The online store goes first: if it fails, nothing is removed and the command can be run again.
The input tables (``OFFERS_DATA_DIR``) and the feature tables built from them belong to the
source systems; until those systems erase the customer, the next features build and materialize
load them again, and the command says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.settings import Settings
from serving.decision_log.erasure import LogErasure

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerErasure:
    log: LogErasure
    online_values: int
    online_store: str

    def describe(self) -> str:
        erased = self.log
        return (
            f"Removed from the decision log: {erased.decisions} decisions "
            f"({erased.offers_shown} offers shown), {erased.events} events, "
            f"{erased.superseded_decisions} superseded decisions, {erased.consent_changes} "
            f"consent answers. Removed from the online store ({self.online_store}): "
            f"{self.online_values} feature values. Kept: these counts, without the customer's id. "
            "The input tables and feature tables are the source systems' to erase; until they "
            "are, the next features build and materialize load the customer again."
        )


def erase_customer(settings: Settings, customer_id: str, store: Any = None) -> CustomerErasure:
    """Erase the customer from the online store (``store``, or the one the settings name) and
    then from the decision log."""
    from features.erasure import erase_online_values
    from features.materialize import request_whole_reload
    from features.store import open_store
    from serving.decision_log import DecisionLog
    from serving.decision_log.erasure import erase_customer as erase_from_log

    store = store if store is not None else open_store(settings)
    online_values = erase_online_values(store, customer_id)
    log = DecisionLog(settings.database_url)
    try:
        erased = erase_from_log(log, customer_id, online_values)
    finally:
        log.close()
    # Every materialize reloads the consent view whole, the others only what is new: without a
    # whole reload the customer would come back as a consent row alone (unknown to the API, 404)
    # while the source tables still hold them. Asked for after the erasure, which it must never
    # stop: a folder that cannot be written leaves the next materialize incremental.
    try:
        request_whole_reload(settings, "customer values were erased from the online store")
    except OSError as error:
        logger.warning(
            "the next materialize could not be asked to reload every view (%s); run "
            "`offers features materialize --whole`",
            type(error).__name__,
        )
    return CustomerErasure(erased, online_values, store.config.online_store.type)
