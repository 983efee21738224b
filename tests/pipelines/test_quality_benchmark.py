"""The quality bench's verdicts: a miss, a target not measured and a met target kept apart."""

from __future__ import annotations

from benchmarks.quality import _loop_at_least, _on_every_world
from pipelines.closed_loop import ClosedLoop, LoopMonth


def _loop(final: float | None, trained: int) -> ClosedLoop:
    return ClosedLoop(
        months=(LoopMonth("2026-11", "offer-ranker/6", final, 0.1),),
        training_weights="each logged offer once",
        starting_lift=0.80,
        engine_offers_trained=trained,
        control_lift=0.81,
    )


def test_the_loop_is_judged_only_when_its_ranker_trained_on_the_engines_offers() -> None:
    assert _loop_at_least(_loop(0.805, trained=18_000), 0.80) is True
    assert _loop_at_least(_loop(0.805, trained=18_000), 0.81) is False
    # Equal is met: "at least the starting value".
    assert _loop_at_least(_loop(0.80, trained=18_000), 0.80) is True
    # A loop too short for the engine's logs to reach a fit tested nothing: not met, not missed.
    assert _loop_at_least(_loop(0.95, trained=0), 0.80) is None
    assert _loop_at_least(_loop(None, trained=18_000), 0.80) is None
    assert _loop_at_least(_loop(0.95, trained=18_000), None) is None


def test_one_world_that_missed_fails_every_world_and_unmeasured_is_not_met() -> None:
    assert _on_every_world([True, True, True]) is True
    assert _on_every_world([True, None, True]) is None
    assert _on_every_world([True, None, False]) is False
    assert _on_every_world([False, True, True]) is False
