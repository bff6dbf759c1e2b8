"""BVLC's examples/siamese trains with ``convnet train`` (its own net and solver, ContrastiveLoss)
on digit pairs from scikit-learn's digits, and the learned 2-D features separate same-digit from
different-digit pairs of held-out digits. Minutes of CPU: runs with CONVNET_SLOW=1."""
from __future__ import annotations

import os

import pytest

from siamese_digits import run


@pytest.mark.skipif(not os.environ.get("CONVNET_SLOW"), reason="trains for minutes: set CONVNET_SLOW=1")
def test_siamese_separates_same_and_different_pairs(tmp_path):
    result = run(tmp_path, iterations=200, train_pairs=2000, test_pairs=600)
    assert result["last_loss"] < result["first_loss"]
    assert result["auc"] > 0.85, result
