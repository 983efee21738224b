"""Settings read from OFFERS_* variables, with defaults that need no server."""

from __future__ import annotations

import pytest

from core.settings import Settings


def test_settings_defaults_need_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OFFERS_ONLINE_STORE", "OFFERS_DATABASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.online_store == "sqlite"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.mlflow_tracking_uri == "sqlite:///mlruns/mlflow.db"
    assert str(settings.data_dir) == "data/raw"


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFERS_ONLINE_STORE", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv(
        "OFFERS_API_KEYS",
        "renderer-key-0000000001:renderer,admin-key-000000000002:admin,"
        "consent-key-00000000003:consent",
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://x@h/db")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.online_store == "redis://127.0.0.1:6379/0"
    assert settings.api_key_roles() == {
        "renderer-key-0000000001": "renderer",
        "admin-key-000000000002": "admin",
        "consent-key-00000000003": "consent",
    }
    assert settings.mlflow_tracking_uri == "postgresql://x@h/db"


def test_unknown_online_store_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFERS_ONLINE_STORE", "memcached://x")
    with pytest.raises(ValueError, match="OFFERS_ONLINE_STORE"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("entry", ["justakey", "long-enough-key-0001:superuser", ":renderer"])
def test_malformed_api_key_entry_is_an_error(entry: str) -> None:
    settings = Settings(_env_file=None, api_keys=entry)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="key:role"):
        settings.api_key_roles()


@pytest.mark.parametrize(
    ("value", "accepted"), [("0", True), ("0.99", True), ("1", False), ("-0.1", False)]
)
def test_the_value_tolerance_is_a_share_below_one(
    monkeypatch: pytest.MonkeyPatch, value: str, accepted: bool
) -> None:
    # At 1 every offer of positive value would be "within" the best: an order by acceptance alone.
    monkeypatch.setenv("OFFERS_VALUE_TOLERANCE", value)
    if accepted:
        assert Settings(_env_file=None).value_tolerance == float(value)  # type: ignore[call-arg]
    else:
        with pytest.raises(ValueError, match="value_tolerance"):
            Settings(_env_file=None)  # type: ignore[call-arg]
