"""Every ``offers`` command answers --help; what a command cannot write is said in a line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

COMMANDS = [
    [],
    ["simulate"],
    ["validate"],
    ["features"],
    ["features", "build"],
    ["features", "apply"],
    ["features", "materialize"],
    ["train"],
    ["promote"],
    ["rollback"],
    ["models"],
    ["models", "list"],
    ["retrain"],
    ["serve"],
    ["invoice-run"],
    ["events", "export"],
    ["experiments"],
    ["experiments", "create"],
    ["experiments", "list"],
    ["experiments", "stop"],
    ["experiments", "report"],
    ["experiments", "simulate"],
    ["consents"],
    ["consents", "sync"],
    ["customers"],
    ["customers", "erase"],
    ["bench"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "offers")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("reload", [None, "feature views applied with other features: x"])
def test_features_apply_says_when_the_next_materialize_reloads_whole(
    monkeypatch: Any, reload: str | None
) -> None:
    import features.materialize
    import features.store

    monkeypatch.setattr(features.store, "apply_repository", lambda: ["customer_contract"])
    monkeypatch.setattr(features.materialize, "whole_reload_requested", lambda settings: reload)
    result = CliRunner().invoke(app, ["features", "apply"])
    assert result.exit_code == 0, result.output
    assert "registered: customer_contract" in result.output
    said = "the next `offers features materialize` reloads every view whole"
    if reload is None:
        assert said not in result.output
    else:
        assert f"{said}: {reload}" in " ".join(result.output.split())


def _erasures_recorded(monkeypatch: Any) -> list[str]:
    """The erasure replaced by a list of what it was asked to erase (nothing is erased)."""
    import pipelines.customer_erasure

    called: list[str] = []
    monkeypatch.setattr(
        pipelines.customer_erasure, "erase_customer", lambda *args: called.append("erased")
    )
    return called


def test_erasing_asks_first_and_erases_nothing_when_refused(
    tmp_path: Any, monkeypatch: Any
) -> None:
    called = _erasures_recorded(monkeypatch)
    refused = CliRunner().invoke(app, ["customers", "erase", "C0001"], input="n\n")
    assert refused.exit_code == 1 and called == []


@pytest.mark.parametrize("customer_id", ["", " ", "C\x001", "x" * 65])
def test_erasing_what_is_no_customer_id_is_refused_before_anything(
    monkeypatch: Any, customer_id: str
) -> None:
    called = _erasures_recorded(monkeypatch)
    result = CliRunner().invoke(app, ["customers", "erase", customer_id, "--yes"])
    assert result.exit_code == 2 and called == []
    assert "is not a customer id" in result.output


def test_serve_refuses_a_key_the_app_would_refuse_before_any_server_starts(
    monkeypatch: Any,
) -> None:
    import uvicorn

    started: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append("server"))
    monkeypatch.setenv("OFFERS_API_KEYS", "short:renderer")
    refused = CliRunner().invoke(app, ["serve", "--port", "8099"])
    assert refused.exit_code == 1 and started == []
    assert "OFFERS_API_KEYS entry 1: a key must be at least 16 characters" in refused.output
    monkeypatch.setenv("OFFERS_API_KEYS", "a-key-long-enough-to-serve:renderer")
    served = CliRunner().invoke(app, ["serve", "--port", "8099"])
    assert served.exit_code == 0 and started == ["server"]


def test_an_id_the_tables_may_hold_is_erased_whatever_the_apis_rule(monkeypatch: Any) -> None:
    import pipelines.customer_erasure

    called: list[str] = []

    class Erased:
        def describe(self) -> str:
            return "erased"

    def erase(settings: Any, customer_id: str) -> Erased:
        called.append(customer_id)
        return Erased()

    monkeypatch.setattr(pipelines.customer_erasure, "erase_customer", erase)
    result = CliRunner().invoke(app, ["customers", "erase", "Kund 7/ö", "--yes"])
    assert result.exit_code == 0, result.output
    assert called == ["Kund 7/ö"]


def test_a_file_the_command_cannot_write_is_named_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    repository = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pipelines.cli", "simulate", "--customers", "10"),
            *("--months", "3", "--out", str(blocker / "world")),
        ],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(repository)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and str(blocker) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_without_a_champion_says_the_model_policy_is_rules(monkeypatch: Any) -> None:
    import pipelines.invoice_run
    import pipelines.policy_evaluation
    from pipelines.invoice_run import ChampionModels
    from pipelines.policy_evaluation import PolicyEvaluation

    given: list[Any] = []

    def evaluated(**kwargs: Any) -> PolicyEvaluation:
        given.append(kwargs["models"])
        return PolicyEvaluation("2026-11", 0, {}, 12)

    monkeypatch.setattr(pipelines.invoice_run, "load_champions", lambda settings: ChampionModels())
    monkeypatch.setattr(pipelines.policy_evaluation, "evaluate_served_policies", evaluated)
    result = CliRunner().invoke(app, ["evaluate"])
    assert result.exit_code == 0, result.output
    assert "no champion model yet: the model policy below is decided by rules" in result.output
    assert len(given) == 1 and not given[0].available  # evaluated with the models it checked


def test_evaluate_prints_its_report_on_standard_output_a_row_a_line(monkeypatch: Any) -> None:
    import pipelines.policy_evaluation
    from pipelines.invoice_run import ChampionModels
    from pipelines.policy_evaluation import PolicyEvaluation

    monkeypatch.setattr(pipelines.invoice_run, "load_champions", lambda settings: ChampionModels())
    monkeypatch.setattr(
        pipelines.policy_evaluation,
        "evaluate_served_policies",
        lambda **kwargs: PolicyEvaluation("2026-11", 0, {}, 12),
    )
    result = CliRunner().invoke(app, ["evaluate"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Served policies on 0 logged decisions of 2026-11"
    # The table's header is one line of 13 columns, wider than any terminal's 80 columns.
    header = next(line for line in lines if line.startswith("| policy |"))
    assert header.count("|") == 14 and len(header) > 80
    assert "no champion model yet" not in result.stdout  # the warning is on standard error
    assert "no champion model yet" in result.stderr


def test_evaluate_refuses_an_output_it_cannot_write_before_replaying(
    monkeypatch: Any, tmp_path: Path
) -> None:
    import pipelines.policy_evaluation

    replayed: list[str] = []
    monkeypatch.setattr(
        pipelines.policy_evaluation,
        "evaluate_served_policies",
        lambda **kwargs: replayed.append("replayed"),
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for out, says in ((blocker / "report.json", "cannot write there"), (tmp_path, "is a folder")):
        result = CliRunner().invoke(app, ["evaluate", "--out", str(out)])
        assert result.exit_code == 1 and says in result.output, result.output
    assert replayed == []


def test_events_export_refuses_an_output_it_cannot_write_before_reading_the_log(
    monkeypatch: Any, tmp_path: Path
) -> None:
    import serving.decision_log.export

    exported: list[str] = []
    monkeypatch.setattr(
        serving.decision_log.export,
        "export_offer_events",
        lambda **kwargs: exported.append("exported"),
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for out, says in ((blocker / "x.parquet", "cannot write there"), (tmp_path, "is a folder")):
        result = CliRunner().invoke(app, ["events", "export", "--out", str(out)])
        assert result.exit_code == 1 and says in result.output, result.output
    assert exported == []


def test_evaluate_refuses_a_what_if_it_cannot_use_before_replaying(monkeypatch: Any) -> None:
    import pipelines.policy_evaluation

    replayed: list[Any] = []
    monkeypatch.setattr(
        pipelines.policy_evaluation,
        "evaluate_served_policies",
        lambda **kwargs: replayed.append(kwargs),
    )
    refusals = {
        "accepted_offer_value_sek": "is not SETTING=V1,V2",
        "accepted_offer_value_sek=100,lots": "'lots' is not a number",
        "accepted_offer_value_sek=nan": "'nan' is not a finite number",
        "exploration_share=0.1": "'exploration_share' is not a setting of the objective",
        "weight_customer=0.5,-1": "weight_customer=-1: Input should be greater than or equal to 0",
    }
    for option, message in refusals.items():
        result = CliRunner().invoke(app, ["evaluate", "--what-if", option])
        assert result.exit_code == 2, (option, result.output)
        assert message in " ".join(result.output.split()), (option, result.output)
    assert replayed == []  # refused before any replay


def test_evaluate_passes_each_what_if_setting_with_its_values(monkeypatch: Any) -> None:
    import pipelines.invoice_run
    import pipelines.policy_evaluation
    from pipelines.invoice_run import ChampionModels
    from pipelines.policy_evaluation import PolicyEvaluation

    given: list[Any] = []

    def evaluated(**kwargs: Any) -> PolicyEvaluation:
        given.append(kwargs["what_if"])
        return PolicyEvaluation("2026-11", 0, {}, 12)

    monkeypatch.setattr(pipelines.invoice_run, "load_champions", lambda settings: ChampionModels())
    monkeypatch.setattr(pipelines.policy_evaluation, "evaluate_served_policies", evaluated)
    options = ["--what-if", "accepted_offer_value_sek=0, 600", "--what-if", "min_acceptance=0.1"]
    result = CliRunner().invoke(app, ["evaluate", *options])
    assert result.exit_code == 0, result.output
    assert given == [{"accepted_offer_value_sek": [0.0, 600.0], "min_acceptance": [0.1]}]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["simulate", "--behaviour", "nonsense"], "--behaviour 'nonsense': must be one of"),
        (["simulate", "--end-month", "2026-13"], "--end-month '2026-13' is not YYYY-MM"),
        (
            ["invoice-run", "--invoice-date", "2026-11-30", "--out", "o.parquet", "--engine", "x"],
            "--engine 'x': must be local or spark",
        ),
        (
            ["invoice-run", "--invoice-date", "2026-02-30", "--out", "o.parquet"],
            "--invoice-date '2026-02-30' is not an ISO date",
        ),
        (["evaluate", "--month", "2026-13"], "--month '2026-13' is not YYYY-MM"),
        (["features", "materialize", "--end", "soon"], "--end 'soon' is not an ISO date"),
    ],
)
def test_an_option_value_the_command_refuses_exits_2_naming_it(
    arguments: list[str], message: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing is written where the tests run
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []
