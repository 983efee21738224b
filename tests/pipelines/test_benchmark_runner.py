"""The benchmarks measure servers and runs as a shell starts them: not in prometheus_client's
multiprocess mode, which Feast's metrics module turns on for a process and its children."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]

REPORT = """
import json, os, sys
{before}
import feast.metrics
import prometheus_client.values
child = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
print(json.dumps([prometheus_client.values.ValueClass.__name__, child]))
"""


def _report(before: str) -> list[str | None]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("PROMETHEUS")
    }
    finished = subprocess.run(
        [sys.executable, "-c", REPORT.format(before=before)],
        cwd=REPOSITORY,
        env={**environment, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer: list[str | None] = json.loads(finished.stdout.strip().splitlines()[-1])
    return answer


def test_feast_metrics_left_alone_switch_the_process_and_its_children_to_files() -> None:
    value_class, children = _report("")
    assert value_class == "MmapedValue"  # prometheus_client's multiprocess value
    assert children is not None and "feast_metrics_" in children


def test_a_benchmark_keeps_prometheus_values_in_process_and_its_children_too() -> None:
    value_class, children = _report(
        "from benchmarks.runner import keep_prometheus_in_process; keep_prometheus_in_process()"
    )
    assert (value_class, children) == ("MutexValue", None)
