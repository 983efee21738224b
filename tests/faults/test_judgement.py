"""How the fault tests judge latency: one stall of the whole machine does not fail a test, a
store that holds requests through a phase, or for a second, or often, does."""

from __future__ import annotations

from tests.faults.figures import Targets
from tests.faults.load import Sent
from tests.faults.scenario import check_live


def _probe(phase: str, at: float, latency_s: float) -> Sent:
    return Sent("live", phase, at, latency_s, 200, b"{}", None, {}, None)


def _probes(phase: str, start: float, latencies_s: list[float]) -> list[Sent]:
    return [_probe(phase, start + i * 0.1, latency) for i, latency in enumerate(latencies_s)]


def _missed(sent: list[Sent], phases: tuple[str, ...]) -> list[str]:
    targets = Targets()
    check_live(targets, sent, phases)
    return [name for name, found in targets.checked.items() if not found["met"]]


def test_one_stall_of_the_machine_is_recorded_but_does_not_fail() -> None:
    # 10 probes a second for 30 s at 10 ms; a stall of 0.6 s holds the six probes sent in it.
    stall = [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    sent = _probes("healthy", 0.0, [0.010] * 150) + _probes(
        "paused", 15.0, [0.010] * 20 + stall + [0.010] * 124
    )
    assert _missed(sent, ("healthy", "paused")) == []


def test_probes_held_through_a_phase_fail_that_phase() -> None:
    # Liveness waiting on a paused store: every probe of the three seconds it lasted is slow.
    sent = _probes("healthy", 0.0, [0.010] * 270) + _probes("paused", 27.0, [0.250] * 30)
    assert _missed(sent, ("healthy", "paused")) == ["paused: /health/live median and slowest"]


def test_a_probe_held_a_second_fails_even_alone() -> None:
    sent = [*_probes("healthy", 0.0, [0.010] * 299), _probe("paused", 30.0, 1.2)]
    assert _missed(sent, ("healthy", "paused")) == ["paused: /health/live median and slowest"]


def test_slow_probes_in_every_phase_fail_the_share() -> None:
    # One probe in seven at 300 ms, all through the test: no phase's median moves.
    latencies = [0.300 if i % 7 == 0 else 0.010 for i in range(300)]
    sent = _probes("healthy", 0.0, latencies[:150]) + _probes("paused", 15.0, latencies[150:])
    assert _missed(sent, ("healthy", "paused")) == ["/health/live: p90 of every phase"]
