"""Every ``offers`` command answers --help."""

from __future__ import annotations

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


def test_erasing_asks_first_and_erases_nothing_when_refused(
    tmp_path: Any, monkeypatch: Any
) -> None:
    import pipelines.customer_erasure

    called: list[str] = []
    monkeypatch.setattr(
        pipelines.customer_erasure, "erase_customer", lambda *args: called.append("erased")
    )
    refused = CliRunner().invoke(app, ["customers", "erase", "C0001"], input="n\n")
    assert refused.exit_code == 1 and called == []
