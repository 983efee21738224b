"""Assembling training sets: sampling whole groups of the training period."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data import sample_groups


def test_sampling_keeps_whole_decisions() -> None:
    frame = pd.DataFrame({"decision_id": np.repeat(np.arange(1000), 3), "x": np.arange(3000)})
    sample = sample_groups(frame, "decision_id", 900, seed=1)
    sizes = sample.groupby("decision_id").size()
    assert (sizes == 3).all()
    assert 600 <= len(sample) <= 1200
    assert sample_groups(frame, "decision_id", None, seed=1) is frame
