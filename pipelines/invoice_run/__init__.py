"""The batch invoice run: offers for every invoice of one billing date, decided as the API decides.

``offers invoice-run --invoice-date D --out FILE [--engine local|spark] [--no-log]``:

1. the input tables are checked against docs/data-contract.md (nothing is written when they
   break it);
2. the invoices dated D are read from ``invoices``, and from ``offer_events`` the offers each
   customer's recent declines block (the engine's decline cap, ``OFFERS_DECLINE_CAP_INVOICES``
   invoices, over the decisions shown before D);
3. the champion models are loaded once (none registered: rules decide);
4. every invoice is decided over the newest feature rows known when the run is made (what the
   API's online store holds; the engine moves the usage back to D's billing period): by default
   through the API's own offers service (:mod:`.logged`), which replays an invoice the decision
   log holds, applies the running experiment and writes the new decisions to the log in bulk;
   with ``--no-log`` by :func:`serving.decision.engine.decide` with the champion alone, nothing
   logged (:mod:`.local`); the Spark engine (:mod:`.spark`) decides its partitions either way;
5. one row per decided invoice is written to a Parquet file, by customer and invoice id,
   atomically (a temporary file, then renamed).

The decision id follows from the billing date, the invoice's place in the day's order and the
invoice id (:func:`serving.decision_log.ids.billing_run_decision_ids`), so a rerun of the same
invoices gives the same ids.
"""

from pipelines.invoice_run.core import (
    ChampionModels,
    DecisionOptions,
    InvoiceRunError,
    decide_invoices,
    decision_row,
    feature_paths,
    recent_declines,
    recent_declines_by_invoice,
)
from pipelines.invoice_run.run import InvoiceRunSummary, load_champions, run_invoice_run

__all__ = [
    "ChampionModels",
    "DecisionOptions",
    "InvoiceRunError",
    "InvoiceRunSummary",
    "decide_invoices",
    "decision_row",
    "feature_paths",
    "load_champions",
    "recent_declines",
    "recent_declines_by_invoice",
    "run_invoice_run",
]
