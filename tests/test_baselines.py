"""The per-top-category logistic regression baseline on a small generated log."""

from __future__ import annotations

import numpy as np

from contract import schema
from training import baselines
from training.fitting import score_metrics


def test_same_sub_category_marks_items_of_the_query_category(small_log):
    frame = small_log.test_frame
    expected = (frame["item_category"] == frame[schema.QUERY_CATEGORY]).to_numpy()
    np.testing.assert_array_equal(
        baselines.same_sub_category(small_log.spec, small_log.test), expected
    )


def test_per_top_logistic_ranks_clicks_and_chooses_c_on_validation(small_log):
    p = small_log
    scores, info = baselines.per_top_logistic(p.spec, p.train, p.valid, p.test)
    assert scores.shape == (len(p.test),)
    assert info["C"] in baselines.C_GRID
    assert score_metrics(p.test, scores)["session_auc"] > 0.65
