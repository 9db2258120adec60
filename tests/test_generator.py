"""The synthetic search log: determinism, contract, calibration and the planted structure.

One 300k-impression log (rate_multiplier 4, so the smallest scenario has ~190 purchases and
the budget platform ~270 clicks) is generated once per module; a few tiny logs test
determinism, the CLI and the synonym switch.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from contract import schema
from contract.user_model import UTILITY_FEATURES
from training.data.generate import field_docs, main
from training.data.simulator import generator as gen
from training.data.simulator import vocabulary as vocab
from training.data.simulator.behaviour import solve_intercept
from training.data.simulator.generator import GeneratorConfig, generate

RATE_MULTIPLIER = 4.0
LOG_CONFIG = GeneratorConfig(
    impressions=300_000, seed=0, rate_multiplier=RATE_MULTIPLIER, show_progress=False
)
# Small and fast: fewer categories and a smaller pilot keep the fixed costs down.
TINY = GeneratorConfig(
    impressions=20_000,
    max_sub_categories=60,
    items_per_sub_category=100,
    calibration_sessions=500,
    sessions_per_chunk=100,
    show_progress=False,
)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    out = tmp_path_factory.mktemp("searchlog")
    generate(LOG_CONFIG, out)
    df = pd.read_parquet(out / "impressions.parquet")
    truth = json.loads((out / "ground_truth.json").read_text())
    return out, df, truth


@pytest.fixture(scope="module")
def same_category(log):
    """Rows whose item is from the query's sub-category, with z-scored utility features."""
    _, df, _ = log
    same = df[df["item_category"] == df[schema.QUERY_CATEGORY]]
    x = same[list(UTILITY_FEATURES)].to_numpy(np.float64)
    return same, (x - x.mean(0)) / x.std(0)


def _fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    model = LogisticRegression(C=10.0, max_iter=1000).fit(x, y)
    return dict(zip(UTILITY_FEATURES, model.coef_[0], strict=True))


def _ratio_and_se(num: pd.Series, den: pd.Series) -> tuple[float, float]:
    """Ratio of per-session sums and its session-clustered standard error (delta method)."""
    ratio = num.sum() / den.sum()
    return ratio, float(np.sqrt(((num - ratio * den) ** 2).sum()) / den.sum())


def test_same_seed_same_files_other_seed_differs(tmp_path):
    for name, config in (("a", TINY), ("b", TINY), ("c", dataclasses.replace(TINY, seed=1))):
        generate(config, tmp_path / name)
    for file in ("impressions.parquet", "catalog.parquet", "ground_truth.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    a = pd.read_parquet(tmp_path / "a" / "impressions.parquet")
    c = pd.read_parquet(tmp_path / "c" / "impressions.parquet")
    assert not a[schema.QUERY_TEXT].equals(c[schema.QUERY_TEXT])


def test_columns_and_dtypes_follow_the_contract(log):
    _, df, _ = log
    expected = [
        *schema.REQUEST_COLUMNS,
        *schema.ITEM_COLUMNS,
        *schema.NUMERIC_FEATURES,
        *schema.CATEGORICAL_FEATURES,
        *schema.TASKS,
        schema.RELEVANCE,
    ]
    assert sorted(df.columns) == sorted(expected)
    assert df[schema.SESSION_ID].dtype == np.int64
    assert df[schema.POSITION].dtype == np.int32
    assert all(df[f].dtype == np.float32 for f in schema.NUMERIC_FEATURES)
    assert all(df[t].dtype == np.int8 for t in (*schema.TASKS, schema.RELEVANCE))
    strings = [*schema.REQUEST_COLUMNS[1:], schema.ITEM_ID, schema.ITEM_TITLE]
    assert all(isinstance(df[c].iloc[0], str) for c in [*strings, *schema.CATEGORICAL_FEATURES])
    assert df[list(schema.NUMERIC_FEATURES)].notna().all().all()


def test_one_row_group_per_chunk_of_sessions(log):
    out, df, _ = log
    sessions = df[schema.SESSION_ID].nunique()
    metadata = pq.ParquetFile(out / "impressions.parquet").metadata
    assert metadata.num_row_groups == -(-sessions // LOG_CONFIG.sessions_per_chunk)
    assert LOG_CONFIG.impressions <= len(df) < LOG_CONFIG.impressions + LOG_CONFIG.max_list_size


def test_cascade_click_atc_purchase(log):
    _, df, _ = log
    assert (df.purchase <= df.atc).all() and (df.atc <= df.click).all()
    assert df.purchase.sum() > 0 and (df.atc > df.purchase).any() and (df.click > df.atc).any()


def test_result_lists_are_whole_distinct_and_in_bounds(log):
    _, df, _ = log
    sessions = df.groupby(schema.SESSION_ID)
    sizes = sessions.size()
    assert sizes.between(LOG_CONFIG.min_list_size, LOG_CONFIG.max_list_size).all()
    assert sizes.min() < 20 and sizes.max() > 90  # the whole range is used
    assert (sessions[schema.ITEM_ID].nunique() == sizes).all()
    expected_position = df.groupby(schema.SESSION_ID).cumcount()
    assert (df[schema.POSITION] == expected_position).all()
    request = [c for c in schema.REQUEST_COLUMNS if c != schema.SESSION_ID]
    assert (sessions[request].nunique() == 1).all().all()


def test_relevance_follows_the_category_hierarchy(log):
    _, df, truth = log
    top_of = {k: v["top_category"] for k, v in truth["sub_categories"].items()}
    item_top = df["item_category"].map(top_of)
    same_sub = df["item_category"] == df[schema.QUERY_CATEGORY]
    sibling = ~same_sub & (item_top == df[schema.TOP_CATEGORY])
    assert (df.relevance[same_sub] >= 2).all()
    assert (df.relevance[sibling] == 1).all()
    assert (df.relevance[~same_sub & ~sibling] == 0).all()
    assert 0.7 < same_sub.mean() < 0.9 and 0.1 < sibling.mean() < 0.2
    # Relevant items are clicked more, whatever their position.
    ctr = df.groupby(schema.RELEVANCE).click.mean()
    assert ctr[3] > ctr[2] > ctr[1] > ctr[0]


def test_position_bias(log):
    _, df, _ = log
    top = df[df.relevance == 3]
    head = top[top[schema.POSITION] < 5].click.mean()
    tail = top[top[schema.POSITION].between(40, 59)].click.mean()
    # (1 + r) ** -0.5: positions 0-4 are examined ~3x as often as positions 40-59.
    assert head > 2 * tail


def test_scenario_rates_match_targets(log):
    """Realised CTR and CVR per scenario within 10% of target (or 3 clustered SEs, when the
    sample cannot resolve 10%: small scenarios' CVR rests on a few hundred purchases and a
    few hundred sessions of very different categories)."""
    _, df, truth = log
    per_session = df.groupby([schema.SCENARIO, schema.SESSION_ID])[["click", "purchase"]]
    sums = per_session.sum().assign(impressions=per_session.size())
    for spec in LOG_CONFIG.scenarios:
        s = sums.loc[spec.name]
        ctr, ctr_se = _ratio_and_se(s.click, s.impressions)
        cvr, cvr_se = _ratio_and_se(s.purchase, s.click)
        target_ctr, target_cvr = spec.ctr * RATE_MULTIPLIER, spec.cvr * RATE_MULTIPLIER
        assert abs(ctr / target_ctr - 1) < max(0.10, 3 * ctr_se / target_ctr), spec.name
        assert abs(cvr / target_cvr - 1) < max(0.10, 3 * cvr_se / target_cvr), spec.name
        assert 3 * ctr_se / target_ctr < 0.10  # CTR is resolved to better than 10% here
        realised = truth["scenarios"][spec.name]["realised"]
        assert realised["ctr"] == pytest.approx(ctr) and realised["cvr"] == pytest.approx(cvr)
        assert truth["scenarios"][spec.name]["target"]["ctr"] == pytest.approx(target_ctr)


def test_scenario_shares_follow_page_views(log):
    _, df, _ = log
    share = df.groupby(schema.SCENARIO)[schema.SESSION_ID].nunique()
    share = share / share.sum()
    page_views = {s.name: s.share for s in LOG_CONFIG.scenarios}
    for name, pv in page_views.items():
        assert share[name] == pytest.approx(pv / sum(page_views.values()), abs=0.03)


def test_atc_sits_between_click_and_purchase_at_its_target(log):
    _, df, truth = log
    for name, scenario in truth["scenarios"].items():
        rows = df[df[schema.SCENARIO] == name]
        atc_rate = rows.atc.sum() / rows.click.sum()
        cap, factor = LOG_CONFIG.max_atc_given_click, LOG_CONFIG.atc_per_purchase
        assert scenario["target"]["atc_given_click"] == pytest.approx(
            min(factor * scenario["target"]["cvr"], cap)
        )
        assert atc_rate == pytest.approx(scenario["target"]["atc_given_click"], rel=0.25)


def test_sub_category_traffic_has_a_long_tail(log):
    _, df, truth = log
    sizes = df.groupby(schema.QUERY_CATEGORY).size().sort_values(ascending=False)
    counts = {k: v["impressions"] for k, v in truth["sub_categories"].items()}
    assert sizes.to_dict() == {k: v for k, v in counts.items() if v}
    share = sizes.reindex(list(counts), fill_value=0).sort_values(ascending=False) / len(df)
    assert share.iloc[: len(share) // 10].sum() > 0.6  # the top 10% of sub-categories
    assert (share < 0.001).mean() > 0.5  # most sub-categories are small
    # Small sub-categories have big siblings: under several tops, the largest sub-category
    # has 50x the impressions of the smallest.
    by_top = share.groupby(lambda k: truth["sub_categories"][k]["top_category"])
    assert (by_top.max() > 50 * by_top.min().clip(lower=1 / len(df))).sum() >= 8


def test_recovered_click_weights_differ_by_top_category(log, same_category):
    """Per-top-category logistic regressions on same-category impressions find each big
    top-category's dominant feature, and the big ones do not all share one."""
    _, _, truth = log
    same, x = same_category
    found = {}
    for top, info in truth["top_categories"].items():
        rows = (same[schema.TOP_CATEGORY] == top).to_numpy()
        if same.click[rows].sum() < 1000:
            continue
        coef = _fit(x[rows], same.click.to_numpy()[rows])
        found[top] = max(coef, key=coef.get)
        assert found[top] == info["dominant_feature"], info["name"]
    assert len(found) >= 4 and len(set(found.values())) >= 4


def test_sibling_weights_are_close_to_their_top_category(log):
    _, _, truth = log
    tops = {
        k: np.array(list(v["click_weights"].values())) for k, v in truth["top_categories"].items()
    }
    own, other = [], []
    for sub in truth["sub_categories"].values():
        w = np.array(list(sub["click_weights"].values()))
        distances = {t: np.linalg.norm(w - tw) for t, tw in tops.items()}
        own.append(distances.pop(sub["top_category"]))
        other.append(min(distances.values()))
    assert np.mean(np.array(own) < np.array(other)) > 0.9


def test_platforms_differ_in_price_and_brand_sensitivity(log, same_category):
    same, x = same_category
    coef = {}
    for name in ("general", "high_end", "budget"):
        rows = (same[schema.PLATFORM] == name).to_numpy()
        coef[name] = _fit(x[rows], same.click.to_numpy()[rows])
    price = {k: c["log_price"] for k, c in coef.items()}
    brand = {k: c["brand_popularity"] for k, c in coef.items()}
    assert price["budget"] < price["general"] < price["high_end"]
    assert brand["high_end"] > brand["general"] and brand["high_end"] > brand["budget"]
    assert brand["high_end"] > abs(price["high_end"])  # high_end: brand over price
    assert abs(price["budget"]) > brand["budget"]  # budget: price over brand


def test_synonyms_make_lexical_overlap_miss_relevant_items(log, tmp_path):
    _, df, _ = log
    relevant = df[df.relevance >= 2]
    missed = (relevant.lexical_overlap == 0).mean()
    assert missed > 0.05
    generate(dataclasses.replace(TINY, synonym_prob=0.0), tmp_path)
    plain = pd.read_parquet(tmp_path / "impressions.parquet")
    # Without synonyms every relevant title shares the query's head noun.
    assert (plain[plain.relevance >= 2].lexical_overlap > 0).all()


def test_lexical_overlap_is_the_token_jaccard_of_query_and_title(log):
    _, df, _ = log
    sample = df.sample(2000, random_state=0)
    for query, title, overlap in zip(
        sample.query_text, sample.item_title, sample.lexical_overlap, strict=True
    ):
        q, t = set(vocab.tokenize(query)), set(vocab.tokenize(title))
        assert overlap == pytest.approx(len(q & t) / len(q | t), abs=1e-6)


def test_catalog_matches_the_impressions(log):
    out, df, truth = log
    catalog = pd.read_parquet(out / "catalog.parquet").set_index(schema.ITEM_ID)
    assert catalog.index.is_unique and len(catalog) == truth["totals"]["catalog_items"]
    shown = df.drop_duplicates(schema.ITEM_ID).set_index(schema.ITEM_ID)
    columns = [schema.ITEM_TITLE, "item_category", "brand", "log_price", "rating", "discount"]
    pd.testing.assert_frame_equal(catalog.loc[shown.index, columns], shown[columns])


def test_ground_truth_describes_the_world(log):
    _, df, truth = log
    assert set(truth["scenarios"]) == {"RU", "ES", "FR", "NL", "US"}
    assert set(truth["platforms"]) == {"general", "high_end", "budget"}
    assert truth["totals"]["impressions"] == len(df)
    assert truth["totals"]["clicks"] == df.click.sum()
    assert sum(v["impressions"] for v in truth["top_categories"].values()) == len(df)
    for sub in truth["sub_categories"].values():
        assert sub["name"] and sub["top_name"] in sub["path"]
        assert set(sub["click_weights"]) == set(UTILITY_FEATURES)
    shares = [p["session_share"] for p in truth["platforms"].values()]
    assert shares == pytest.approx([100 / 111, 10 / 111, 1 / 111])
    assert truth["config"]["rate_multiplier"] == RATE_MULTIPLIER


def test_cli_writes_the_files_and_rejects_unknown_options(tmp_path, capsys):
    argv = ["--impressions", "3000", "--seed", "3", "--out", str(tmp_path)]
    argv += ["--max-sub-categories", "40", "--calibration-sessions", "300", "--no-show-progress"]
    assert main(argv) == 0
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    assert truth["config"]["seed"] == 3 and truth["config"]["max_sub_categories"] == 40
    assert (tmp_path / "impressions.parquet").exists() and (tmp_path / "catalog.parquet").exists()
    for bad in (["--zipf-exponnent", "1.2"], ["--impress", "10"], ["--min-list-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*bad, "--out", str(tmp_path / "bad")])
        assert exit_info.value.code == 2
    assert "invalid GeneratorConfig" in capsys.readouterr().err


def test_every_knob_is_documented():
    docs = field_docs(GeneratorConfig)
    for knob in dataclasses.fields(GeneratorConfig):
        assert knob.name in gen.__doc__, knob.name
        assert docs.get(knob.name), knob.name


def test_invalid_config_and_unreachable_targets_are_errors():
    with pytest.raises(ValueError, match="items_per_sub_category"):
        GeneratorConfig(items_per_sub_category=50)
    with pytest.raises(ValueError, match="rate_multiplier"):
        GeneratorConfig(rate_multiplier=40.0).targets()


def test_solve_intercept_hits_the_target_or_says_it_cannot():
    rng = np.random.default_rng(0)
    score, weight = rng.normal(size=1000), np.full(1000, 0.5 / 1000)
    b = solve_intercept(weight, score, 0.01, "CTR")
    assert weight @ (1 / (1 + np.exp(-(b + score)))) == pytest.approx(0.01, rel=1e-5)
    with pytest.raises(ValueError, match="outside the reachable range"):
        solve_intercept(weight, score, 0.6, "CTR")  # weights cap the rate at 0.5


def test_synonym_groups_are_disjoint_and_singular():
    words = [w for group in vocab.SYNONYM_GROUPS for w in group]
    assert len(words) == len(set(words))
    assert vocab.category_phrase("Laptops") == ("laptop",)
    assert vocab.category_phrase("Black & White Laser Printers") == (
        "black",
        "white",
        "laser",
        "printer",
    )
    assert "notebook" in vocab.synonyms_of("laptop") and "tv" in vocab.synonyms_of("television")
