"""The own-data example end to end through the public commands (pipelines/own_data.py) on a
small graded set: a served model's ranking equals the offline ranking it was evaluated with."""

from __future__ import annotations

import json

import pandas as pd

from pipelines import own_data

COLOURS = ("red", "blue", "green", "black", "white")
THINGS = ("drill", "lamp", "kettle", "chair")


def judged_set(path) -> None:
    """20 queries x 8 products, graded 1..3 by how much of the query the title holds."""
    rows = []
    for q in range(20):
        colour, thing = COLOURS[q % 5], THINGS[q // 5]
        for i in range(8):
            title = f"{COLOURS[(q + i) % 5]} {THINGS[(q // 5 + i // 3) % 4]} model {i}"
            grade = 1 + (colour in title) + (thing in title)
            rows.append({"search": f"{colour} {thing}", "pid": f"p{q}-{i}", "name": title,
                         "stars": grade})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False, encoding="latin-1")


def test_the_served_ranking_equals_the_offline_one(tmp_path, encoder_dir, monkeypatch):
    judged_set(tmp_path / "judged.csv")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[source]\npath = "judged.csv"\nencoding = "latin-1"\n\n'
        '[columns]\nquery = "search"\nitem_id = "pid"\nitem_text = "name"\n\n'
        '[labels.graded]\ncolumn = "stars"\nrange = [1, 3]\n'
    )
    monkeypatch.setenv("MOERANK_RESULTS_DIR", str(tmp_path / "results"))
    code = own_data.main([
        "--spec", str(spec), "--artifacts", str(tmp_path / "artifacts"), "--encoder",
        str(encoder_dir), "--folds", "2", "--queries", "3", "--results", "own_data_test",
        "--train-args", "--epochs 3 --lr 3e-3 --batch-size 64 --patience 2 --listwise 1.0",
    ])  # fmt: skip

    result = json.loads((tmp_path / "results" / "own_data_test.json").read_text())
    agreement = result["served_vs_offline"]
    assert agreement["queries"] == 3 and agreement["same_order"]
    assert agreement["max_abs_score_difference"] <= 1e-5
    assert code == 0
    assert result["served_score"]["formula"] == "expected_grade"
    assert result["served_score"]["offset"] == 1.0  # scores are expected grades 1..3
    steps = {row["step"] for row in result["rows"]}
    assert {"check", "train", "evaluate", "export", "embed_items", "rank_over_http"} <= steps
    assert {"cosine (zero-shot encoder)", "bm25", "random"} <= set(result["ndcg_at_5"])
