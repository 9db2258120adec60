"""Your own data through the public commands: `python -m training.data.check SPEC`, then
`python -m training.train --spec SPEC`, then `python -m training.evaluate OUT`, on small
CSV and Parquet files (utf-8 and latin-1, zipped or not, with and without numeric features,
graded and binary labels); and bad specs failing with one clear line each."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training import evaluate, train
from training.data import check

WORDS = ("crème", "brûlée", "torch", "red", "shoe", "boot", "oled", "lamp", "desk", "mug")


def shop_log(groups: int = 24, items: int = 5, seed: int = 0) -> pd.DataFrame:
    """Graded judgments whose grade follows the query-title overlap and the price a little."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        query = rng.choice(WORDS, 2, replace=False)
        for i in range(items):
            title = rng.choice(WORDS, 3, replace=False)
            grade = min(3, 1 + len(set(query) & set(title)) + int(rng.random() < 0.2))
            rows.append(
                {
                    "search_term": " ".join(query) + f" n{g}",  # one list per query
                    "product_uid": f"{g:03d}{i}",
                    "title": " ".join(title),
                    "grade": grade,
                    "price": round(float(rng.gamma(2.0, 10.0)), 2),
                    "brand": str(rng.choice(["acme", "NA", "bic"])),
                    "department": f"d{g % 3}",
                    "clicked": int(grade >= 2),
                    "bought": int(grade >= 3),
                }
            )
    return pd.DataFrame(rows)


def write_zip(frame: pd.DataFrame, path: Path, encoding: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("log.csv", frame.to_csv(index=False).encode(encoding))
    return path


GRADED = """
[source]
path = "{path}"
encoding = "{encoding}"
[columns]
query = "search_term"
item_id = "product_uid"
item_text = "title"
numeric = {numeric}
ignore = ["clicked", "bought", "brand", "department"]
[labels.graded]
column = "grade"
range = [1, 3]
"""

BINARY = """
[source]
path = "log.parquet"
[columns]
query = "search_term"
item_id = "product_uid"
category = "department"
numeric = ["price"]
categorical = ["brand"]
ignore = ["grade", "title"]
[labels]
click = "clicked"
purchase = "bought"
"""

FAST = [
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--set",
    "hidden=(16, 8)",
    "--set",
    "embedding_dim=4",
]


def write_spec(folder: Path, text: str) -> Path:
    (folder / "spec.toml").write_text(text, encoding="utf-8")
    return folder / "spec.toml"


def run_train(spec: Path, out: Path, *extra: str) -> int:
    try:
        train.main(["--spec", str(spec), "--out", str(out), "--embeddings", str(out.parent / "emb"),
                    *FAST, *extra])  # fmt: skip
    except SystemExit as exit_:
        return int(exit_.code)
    return 0


def test_graded_latin1_zip_checks_trains_and_evaluates_against_baselines(
    tmp_path, capsys, monkeypatch
):
    write_zip(shop_log(), tmp_path / "log.csv.zip", "latin-1")
    spec = write_spec(
        tmp_path, GRADED.format(path="log.csv.zip", encoding="latin-1", numeric='["price"]')
    )
    assert check.main([str(spec)]) == 0
    said = capsys.readouterr().out
    assert "rows: 120" in said and "groups: 24" in said
    assert "grades of 'grade' (1..3): 1:" in said and "task grade_ge2 (grade >= 2)" in said
    assert "numeric features (1): price" in said
    assert "columns ignored (4): brand, department, clicked, bought" in said

    out = tmp_path / "run"
    assert run_train(spec, out, "--model", "mlp_mtl") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert set(test) >= {"ndcg@5", "ndcg@10", "session_auc:grade_ge2", "session_auc:grade_ge3"}
    assert test["on"]["split"].startswith("test: 10% of groups test")
    assert test["on"]["score"].startswith("expected grade")
    assert test["on"]["gain"] == "grade - 1"

    capsys.readouterr()
    monkeypatch.setenv("MOERANK_RESULTS_DIR", str(tmp_path / "results"))
    assert evaluate.main([str(out), "--results", "own"]) == 0
    table = capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    record = json.loads((tmp_path / "results" / "own.json").read_text())
    assert record["train_command"] and len(record["rows"]) == 5
    scorers = set(result["mean"])
    assert scorers == {"model (mlp_mtl)", "bm25", "cosine (zero-shot encoder)", "xgboost", "random"}
    for name in scorers:
        assert name in table
        assert 0 <= result["mean"][name]["ndcg@5"][0] <= 1
    # The graded gain makes an exact-overlap ranking strong: BM25 beats a random order.
    assert result["mean"]["bm25"]["ndcg@5"][0] > result["mean"]["random"]["ndcg@5"][0]
    assert "list_size" in result["folds"][0]["breakdown"]["bm25"]


def test_binary_parquet_with_features_trains_mlpr_in_folds(tmp_path, capsys):
    shop_log().to_parquet(tmp_path / "log.parquet", index=False)
    spec = write_spec(tmp_path, BINARY)
    assert check.main([str(spec)]) == 0
    said = capsys.readouterr().out
    assert "task click (clicked)" in said and "request fields: category = 'department'" in said
    out = tmp_path / "run"
    assert run_train(spec, out, "--model", "mlpr", "--folds", "2") == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["folds"]) == {"fold_0", "fold_1"} and "ndcg@5" in summary["mean"]
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["tasks"] == ["click", "purchase"] and run["text"] is False
    assert run["options"]["gate_inputs"] == ["query_category", "item"]  # what the data has
    assert evaluate.main([str(out), "--baselines", "xgboost", "random"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert len(result["folds"]) == 2
    assert set(result["mean"]) == {"model (mlpr)", "xgboost", "random"}
    assert "query_category" in result["folds"][0]["breakdown"]["xgboost"]
    assert "session_auc:purchase" in result["mean"]["xgboost"]


def test_a_utf8_csv_without_numeric_features_trains_on_text_only_with_no_text_off(tmp_path, capsys):
    shop_log().to_csv(tmp_path / "log.csv", index=False)
    spec = write_spec(tmp_path, GRADED.format(path="log.csv", encoding="utf-8", numeric="[]"))
    assert check.main([str(spec)]) == 0
    assert "numeric features (0): none" in capsys.readouterr().out
    assert run_train(spec, tmp_path / "run", "--model", "mlp_mtl", "--no-text") == 2
    assert "the data gives a model no inputs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "spec", "line"),
    [
        ("hmoe", BINARY, "error: model 'hmoe' needs a scenario column for its scenario towers"),
        ("mlpr", BINARY.replace('purchase = "bought"', ""), "error: model 'mlpr' needs at least two tasks"),
        ("adv_hsc_moe", BINARY, "error: model 'adv_hsc_moe' needs a top_category column"),
        ("mlp_mtl", BINARY + '\n', None),
    ],
)  # fmt: skip
def test_a_recipe_that_needs_what_the_data_lacks_fails_before_training(
    tmp_path, capsys, model, spec, line
):
    shop_log().to_parquet(tmp_path / "log.parquet", index=False)
    path = write_spec(tmp_path, spec)
    out = tmp_path / "run"
    if line is None:
        assert run_train(path, out, "--model", model, "--set", "tasks=('click',)") == 2
        assert "the data's tasks are ('click', 'purchase')" in capsys.readouterr().err
        return
    assert run_train(path, out, "--model", model) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(line)
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec_change", "data_change", "line"),
    [
        (('query = "search_term"', 'qeury = "search_term"'), {},
         "error: missing key 'query' in [columns]"),
        (('query = "search_term"', 'query = "search_term"\ncolums = []'), {},
         "error: unknown key 'colums' in [columns]; known keys: query, item_id"),
        (('numeric = ["price"]', 'numeric = ["price", "weight"]'), {},
         "error: log.parquet lacks the mapped columns ['weight']"),
        ((), {"price": ["cheap"] + ["1.5"] * 119}, "error: numeric feature 'price' is not numeric: 1 rows"),
        ((), {"bought": [1] + [0] * 119, "clicked": [0] * 120},
         "error: 1 rows have purchase=1 but click=0"),
        ((), {"clicked": [2] + [0] * 119}, "error: label click = 'clicked' must be 0/1"),
    ],
)  # fmt: skip
def test_a_bad_spec_or_bad_data_fails_check_with_one_clear_line(
    tmp_path, capsys, spec_change, data_change, line
):
    shop_log().assign(**data_change).to_parquet(tmp_path / "log.parquet", index=False)
    path = write_spec(tmp_path, BINARY.replace(*spec_change) if spec_change else BINARY)
    assert check.main([str(path)]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("error:")]
    assert [e for e in errors if e.startswith(line)], errors


def test_a_non_monotone_cascade_and_a_wrong_range_fail(tmp_path, capsys):
    shop_log().to_csv(tmp_path / "log.csv", index=False)
    text = GRADED.format(path="log.csv", encoding="utf-8", numeric="[]")
    assert check.main([str(write_spec(tmp_path, text + "cascade = [3, 2]\n"))]) == 2
    assert "error: [labels.graded]: cascade [3, 2] is not increasing" in capsys.readouterr().err
    assert check.main([str(write_spec(tmp_path, text.replace("[1, 3]", "[0, 3]")))]) == 2
    assert "declared 0..3 but its lowest grade is 1" in capsys.readouterr().err


def test_an_option_the_model_cannot_take_fails_before_training(tmp_path, capsys):
    shop_log().to_parquet(tmp_path / "log.parquet", index=False)
    out = tmp_path / "run"
    assert run_train(write_spec(tmp_path, BINARY), out, "--model", "mlpr", "--set", "top_k=20") == 2
    said = capsys.readouterr().err
    assert "error: model 'mlpr' cannot be built on this data: need 1 <= top_k <= 8" in said
    assert not out.exists()


def test_a_yaml_spec_reads_like_the_toml_one(tmp_path, capsys):
    pytest.importorskip("yaml")
    shop_log().to_parquet(tmp_path / "log.parquet", index=False)
    (tmp_path / "spec.yaml").write_text(
        "source: {path: log.parquet}\n"
        "columns: {query: search_term, item_id: product_uid, numeric: [price]}\n"
        "labels: {click: clicked, purchase: bought}\n"
    )
    assert check.main([str(tmp_path / "spec.yaml")]) == 0
    assert "numeric features (1): price" in capsys.readouterr().out
