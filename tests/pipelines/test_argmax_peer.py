"""The argmax-acceptance peer on hand-built feature tables and offer events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.catalog import Catalog, load_catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from pipelines.argmax_peer import VIEWS, ArgmaxPeer, feature_rows, training_rows
from tests.simulated_world import CATALOG

CUTOFF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
CUSTOMERS = 400
# Heavy data users take the data add-on, light ones the cheaper plan, in the hand-built logs.
HEAVY, LIGHT = "ADDON_DATA_10GB", "PLAN_1GB"
SNAPSHOTS = (dt.datetime(2026, 1, 1), dt.datetime(2026, 10, 1), dt.datetime(2026, 11, 1))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG)


def _heavy(customer: int, snapshot: int) -> bool:
    # From November on, every customer's usage flips: a model that read November's rows for an
    # October event would learn the opposite.
    return (customer % 2 == 0) != (snapshot == 2)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("peer-features")
    rng = np.random.default_rng(0)
    for view, columns in VIEWS.items():
        rows = []
        for customer in range(CUSTOMERS):
            for number, moment in enumerate(SNAPSHOTS):
                row: dict[str, object] = {
                    CUSTOMER_KEY: f"C{customer}",
                    EVENT_TIMESTAMP: pd.Timestamp(moment),
                }
                for name, kind in columns.items():
                    row[name] = (
                        "PLAN_5GB" if kind == "str" else float(rng.uniform(0, 5))  # noise
                    )
                row["data_gb_avg_3m"] = 20.0 if _heavy(customer, number) else 1.0
                row["current_monthly_fee_sek"] = 299.0
                rows.append(row)
        frame = pd.DataFrame(rows)
        frame = frame[[CUSTOMER_KEY, EVENT_TIMESTAMP, *columns]]
        frame.to_parquet(folder / f"{view}.parquet")
    return folder


def _events(start: dt.datetime, days: int, accepted_heavy: str, seed: int) -> pd.DataFrame:
    """Each customer shown both offers once on a day; one is accepted by the usage rule."""
    rng = np.random.default_rng(seed)
    rows = []
    for customer in range(CUSTOMERS):
        shown = start + dt.timedelta(days=int(rng.integers(days)), hours=8)
        snapshot = 1 if shown >= SNAPSHOTS[1] else 0
        heavy = _heavy(customer, snapshot if shown < SNAPSHOTS[2] else 2)
        for rank, offer in enumerate((HEAVY, LIGHT), start=1):
            takes = (offer == accepted_heavy) == heavy and rng.uniform() < 0.8
            rows.append(
                {
                    "decision_id": f"D{customer}-{shown:%m%d}",
                    CUSTOMER_KEY: f"C{customer}",
                    "offer_id": offer,
                    "rank": rank,
                    "shown_at": pd.Timestamp(shown, tz="UTC"),
                    "outcome": "accepted" if takes else "ignored",
                    "outcome_at": pd.Timestamp(shown + dt.timedelta(days=2), tz="UTC")
                    if takes
                    else pd.NaT,
                }
            )
    return pd.DataFrame(rows)


def _before() -> pd.DataFrame:
    # Shown in October, with features of 1 October: heavy users take the data add-on.
    return _events(dt.datetime(2026, 10, 1), 28, HEAVY, seed=1)


def _pairs(customers: range, at: dt.datetime) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"decision_id": f"E{c}", CUSTOMER_KEY: f"C{c}", "offer_id": o, "at": at}
            for c in customers
            for o in (HEAVY, LIGHT)
        ]
    )


def test_it_learns_only_what_was_known_before_the_month() -> None:
    events = pd.concat([_before(), _events(dt.datetime(2026, 11, 1), 20, LIGHT, seed=2)])
    # Shown on 31 October, answered on 2 November: not known by the cutoff.
    late = events.iloc[:2].assign(
        shown_at=pd.Timestamp("2026-10-31T12:00", tz="UTC"),
        outcome="accepted",
        outcome_at=pd.Timestamp("2026-11-02T09:00", tz="UTC"),
    )
    rows = training_rows(pd.concat([events, late]), CUTOFF)
    assert len(rows) == 2 * CUSTOMERS  # October's events only, the late answers left out
    assert (rows["at"] < pd.Timestamp(CUTOFF)).all()
    assert rows["accepted"].sum() == (_before()["outcome"] == "accepted").sum()


def test_features_are_the_newest_known_at_the_moment(features_dir: Path, catalog: Catalog) -> None:
    pairs = pd.DataFrame(
        {
            CUSTOMER_KEY: ["C0", "C0", "C1"],
            "offer_id": [HEAVY, HEAVY, LIGHT],
            "rank": [1, 1, 1],
            "at": pd.to_datetime(
                ["2026-10-31T23:59", "2026-11-01T00:00", "2026-09-30T00:00"], utc=True
            ),
        }
    )
    frame = feature_rows(pairs, features_dir, catalog, [o.offer_id for o in catalog.offers])
    # C0 is heavy until November's row; C1 light until then (the January row on 30 September).
    assert frame["data_gb_avg_3m"].tolist() == [20.0, 1.0, 1.0]
    assert frame["offer_monthly_fee_sek"].tolist()[2] == catalog.by_id()[LIGHT].monthly_fee_sek
    assert CUSTOMER_KEY not in frame and "decision_id" not in frame


def test_the_peer_shows_the_likeliest_offer_and_ignores_the_month_it_is_judged_on(
    features_dir: Path, catalog: Catalog
) -> None:
    before = _before()
    peer = ArgmaxPeer.train(before, features_dir, catalog, CUTOFF)
    assert peer.rows == 2 * CUSTOMERS
    at = pd.Timestamp("2026-10-20", tz="UTC")
    chosen = peer.choose(_pairs(range(20), at))
    assert chosen == {f"E{c}": HEAVY if c % 2 == 0 else LIGHT for c in range(20)}
    # November's logs say the opposite; they are after the cutoff, so nothing changes.
    after = _events(dt.datetime(2026, 11, 1), 20, LIGHT, seed=2)
    with_november = ArgmaxPeer.train(pd.concat([before, after]), features_dir, catalog, CUTOFF)
    pairs = _pairs(range(CUSTOMERS), at)
    np.testing.assert_array_equal(with_november.acceptance(pairs), peer.acceptance(pairs))
    # Trained with November known, it would choose otherwise: the test can tell.
    later = ArgmaxPeer.train(
        pd.concat([before, after]), features_dir, catalog, dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    )
    assert not np.array_equal(later.acceptance(pairs), peer.acceptance(pairs))


def test_without_outcomes_before_the_month_it_says_so(features_dir: Path, catalog: Catalog) -> None:
    events = _events(dt.datetime(2026, 11, 1), 20, LIGHT, seed=2)
    with pytest.raises(
        ValueError, match="no accepted and unaccepted offer events before 2026-11-01"
    ):
        ArgmaxPeer.train(events, features_dir, catalog, CUTOFF)
