"""The decision log: every decision, its offers, the events that come back, the experiments, and
the consent changes received through the API.

SQLAlchemy Core over a SQLite file by default, PostgreSQL by configuration. One module per
concern: ``schema`` (the tables), ``records`` (what is stored and read back), ``database`` (the
connection and its durability), ``statements`` and ``sqlite`` (the request path's statements, run
straight on sqlite3 for a SQLite log, whose WAL is checkpointed in the background),
``repository`` (the log itself), ``export`` (to offer_events), ``experiments`` (the
experiments' SQL) and ``consents`` (the consent changes' SQL).
"""

from serving.decision_log.records import DecisionRecord, EventRecord, LoggedOffer, StoredDecision
from serving.decision_log.repository import DecisionLog

__all__ = ["DecisionLog", "DecisionRecord", "EventRecord", "LoggedOffer", "StoredDecision"]
