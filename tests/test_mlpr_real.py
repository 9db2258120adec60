"""The real-data part of the mlpr experiments: wide lexical features and a clean skip."""

import numpy as np
import pandas as pd
import pytest

from training.experiments import mlpr_real


def test_lexical_features_by_hand():
    frame = pd.DataFrame(
        {
            "query_text": ["Red Shoes", "tv"],
            "item_title": ["red running shoes", None],
            "desc": ["shoes for running", "a television"],
        }
    )
    out = mlpr_real.lexical_features(frame, "desc")
    # {red, shoes} vs {red, running, shoes}: Jaccard 2/3, both query tokens in the title
    assert out["query_jaccard"].tolist() == pytest.approx([2 / 3, 0.0])
    assert out["query_in_title"].tolist() == pytest.approx([1.0, 0.0])
    assert out["query_in_description"].tolist() == pytest.approx([0.5, 0.0])
    assert out["title_tokens"].tolist() == pytest.approx([np.log1p(3), 0.0])
    assert out["description_tokens"].tolist() == pytest.approx([np.log1p(3), np.log1p(2)])


def test_missing_shared_data_is_skipped_not_an_error(tmp_path, capsys):
    mlpr_real.main(["--data", str(tmp_path / "absent"), "--artifacts", str(tmp_path)])
    assert "skipped" in capsys.readouterr().out
