"""The soak benchmark's arithmetic and its registration: what ``offers bench soak`` reports as
drift, the ``--minutes`` option only the soak takes, and what a plain ``offers bench`` runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.runner import run_benchmarks
from benchmarks.soak import drift, process_sample


def _window(t_s: float, rss: float, p99: float) -> dict[str, object]:
    stream = {"client_p99_ms": p99, "server_p99_ms": p99 / 2}
    return {
        "t_s": t_s,
        "rss_mib": rss,
        "open_fds": 30,
        "threads": 10,
        "decision_log_wal_mib": 1.0,
        "online_store_wal_mib": 0.0,
        "decision_log_mib": t_s / 10,
        "offers": stream,
        "events": stream,
    }


def test_drift_compares_the_last_window_with_the_first_and_fits_memory_per_hour() -> None:
    # Memory grows 1 MiB per 36 s window: 100 MiB an hour; p99 doubles.
    series = [_window(36.0 * (i + 1), 500.0 + i, 10.0 + 10.0 * i / 9) for i in range(10)]
    found = drift(series)
    assert found["rss_mib"] == [500.0, 509.0]
    assert found["rss_change_mib"] == 9.0
    assert found["rss_slope_mib_per_hour"] == pytest.approx(100.0, abs=0.1)
    assert found["rss_slope_second_half_mib_per_hour"] == pytest.approx(100.0, abs=0.1)
    assert found["offers_client_p99_ms_ratio_last_to_first"] == 2.0
    assert found["offers_server_p99_ms"] == [5.0, 10.0]
    assert found["decision_log_max_mib"] == 36.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_process_sample_reads_this_process(tmp_path: Path) -> None:
    wal = tmp_path / "x.db-wal"
    wal.write_bytes(b"\0" * 2**20)
    sample = process_sample(os.getpid(), {"wal": wal, "absent": tmp_path / "none"})
    assert sample["rss_mib"] > 10
    assert sample["open_fds"] >= 3
    assert sample["threads"] >= 1
    assert sample["wal_mib"] == 1.0
    assert sample["absent_mib"] == 0


def test_minutes_is_refused_without_the_soak_and_when_not_positive() -> None:
    with pytest.raises(KeyError, match="--minutes applies to soak only"):
        run_benchmarks(["api"], minutes=5)
    with pytest.raises(KeyError, match="--minutes must be positive"):
        run_benchmarks(["soak"], minutes=0)


def test_a_plain_bench_leaves_out_the_soak_and_the_million_invoices() -> None:
    from benchmarks.runner import BENCHMARKS, default_benchmarks

    assert {"soak", "invoice-run-million"} <= set(BENCHMARKS)
    assert set(BENCHMARKS) - set(default_benchmarks()) == {"soak", "invoice-run-million"}


def test_the_invoice_runs_memory_counts_a_page_shared_after_a_fork_once() -> None:
    import subprocess
    import sys

    from benchmarks.invoice_run import _MemorySampler

    # 200 MiB written before the fork (shared with the child) and 100 MiB only the child writes:
    # about 300 MiB together, not the 500 that adding both processes' resident sizes gives.
    program = (
        "import os, time\n"
        'shared = bytearray(b"x") * (200 * 2**20)\n'
        "if os.fork() == 0:\n"
        '    own = bytearray(b"x") * (100 * 2**20); time.sleep(2.5); os._exit(0)\n'
        "time.sleep(3); os.wait()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", program])
    sampler = _MemorySampler(child.pid)
    sampler.start()
    child.wait()
    sampler.stop()
    assert sampler.peak_mb is not None
    assert 300 <= sampler.peak_mb < 420
