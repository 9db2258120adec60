"""The models file (contract/models_file.py): every rule refused with a message that names
it, and the assignment of units to variants: sticky, shares within sampling error over
10,000 units, and a share change moving only the units it must."""

from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import binomtest, chisquare

from contract.models_file import (
    Experiment,
    ModelsFileError,
    Variant,
    assign,
    load_models_file,
    parse_models_file,
)

GOOD = """
default = "abc"
[models]
dnn = "bundles/dnn"
best = "/abs/best"
[experiments.abc]
unit = "user_id"
variants = [{name = "control", model = "dnn", share = 0.5},
            {name = "treatment", model = "best", share = 0.5}]
shadows = ["dnn"]
"""
UNITS = [f"user-{i}" for i in range(10_000)]


def experiment(**shares: float) -> Experiment:
    return Experiment(
        unit="user_id",
        variants=[Variant(name=n, model="m", share=s) for n, s in shares.items()],
    )


def test_a_good_file_resolves_paths_against_its_directory(tmp_path):
    (tmp_path / "models.toml").write_text(GOOD)
    models = load_models_file(tmp_path / "models.toml")
    assert models.models == {"dnn": tmp_path / "bundles/dnn", "best": Path("/abs/best")}
    assert models.default == "abc"
    assert [v.name for v in models.experiments["abc"].variants] == ["control", "treatment"]


@pytest.mark.parametrize(
    "edit,says",
    [
        (("share = 0.5}]", "share = 0.6}]"), "shares sum to 1.1"),
        (('shadows = ["dnn"]', 'shadows = ["nope"]'), "shadow 'nope' is not in [models]"),
        (('model = "best"', 'model = "other"'), "names model 'other', not in [models]"),
        (('unit = "user_id"', 'unit = "ip"'), "experiments.abc.unit"),
        (('"treatment"', '"control"'), "variant names must be unique"),
        (('shadows = ["dnn"]', 'shadows = ["dnn", "dnn"]'), "shadow names must be unique"),
        (('default = "abc"', 'default = "zzz"'), "default 'zzz' names no model"),
        (('dnn = "bundles/dnn"', "dnn = 3"), "a bundle path must be a string"),
        (("share = 0.5}]", 'share = "0.5"}]'), "share"),
        (("[experiments.abc]", "[experiments.dnn]"), "name both a model and an experiment"),
        (('unit = "user_id"', 'unit = "user_id"\ncolour = "red"'), "colour"),
        (("default =", "default"), "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_rule(edit, says):
    with pytest.raises(ModelsFileError) as error:
        parse_models_file(GOOD.replace(*edit), Path("/base"))
    assert says in str(error.value)


def test_shares_need_only_sum_to_one_within_tolerance():
    thirds = {"a": 0.1 + 0.2, "b": 0.3, "c": 0.4}  # 0.30000000000000004 + 0.3 + 0.4
    assert len(experiment(**thirds).variants) == 3
    with pytest.raises(ValueError, match="sum to"):
        experiment(a=0.5, b=0.5 + 1e-6)


def test_a_missing_file_names_its_path(tmp_path):
    with pytest.raises(ModelsFileError, match="cannot read models file"):
        load_models_file(tmp_path / "absent.toml")


def test_assignment_is_sticky_and_holds_the_shares_over_10000_units():
    spec = experiment(control=0.5, treatment=0.3, canary=0.2)
    first = [assign("abc", spec, unit).name for unit in UNITS]
    assert first == [assign("abc", spec, unit).name for unit in UNITS]  # the same every time
    counts = Counter(first)
    expected = [0.5 * len(UNITS), 0.3 * len(UNITS), 0.2 * len(UNITS)]
    observed = [counts["control"], counts["treatment"], counts["canary"]]
    assert chisquare(observed, expected).pvalue > 0.001, observed
    for name, share in (("control", 0.5), ("treatment", 0.3), ("canary", 0.2)):
        assert binomtest(counts[name], len(UNITS), share).pvalue > 0.001, (name, counts)


def test_different_experiments_assign_independently():
    spec = experiment(a=0.5, b=0.5)
    pairs = Counter((assign("one", spec, u).name, assign("two", spec, u).name) for u in UNITS)
    assert chisquare(list(pairs.values())).pvalue > 0.001, pairs  # four cells, equal


def test_changing_one_share_moves_only_the_units_it_must():
    """Treatment 10% -> 20%, the others keeping their 1:1 ratio: units move only from control
    and other into treatment, about 10% of them, and none between control and other."""
    before = experiment(control=0.45, other=0.45, treatment=0.1)
    after = experiment(control=0.4, other=0.4, treatment=0.2)
    moves = Counter((assign("e", before, u).name, assign("e", after, u).name) for u in UNITS)
    moved = {pair: n for pair, n in moves.items() if pair[0] != pair[1]}
    assert set(moved) <= {("control", "treatment"), ("other", "treatment")}, moved
    assert binomtest(sum(moved.values()), len(UNITS), 0.1).pvalue > 0.001, moved


def test_reordering_or_adding_a_variant_moves_no_unit_between_the_others():
    spec = experiment(a=0.5, b=0.5)
    reordered = experiment(b=0.5, a=0.5)
    assert all(assign("e", spec, u).name == assign("e", reordered, u).name for u in UNITS)
    grown = experiment(a=0.4, b=0.4, c=0.2)
    for unit in UNITS:
        now = assign("e", grown, unit).name
        assert now in ("c", assign("e", spec, unit).name)


def test_a_zero_share_variant_gets_no_unit():
    spec = experiment(on=1.0, off=0.0)
    assert {assign("e", spec, u).name for u in UNITS[:2000]} == {"on"}
