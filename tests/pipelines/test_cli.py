"""Every ``offers`` command answers --help."""

from __future__ import annotations

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
    ["retrain"],
    ["serve"],
    ["invoice-run"],
    ["events", "export"],
    ["experiments", "report"],
    ["consents"],
    ["consents", "sync"],
    ["bench"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "offers")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
