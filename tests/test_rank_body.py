"""The /v1/rank decoder (service/rank_body.py, msgspec) against the API's documented schema
(schemas.RankRequest, pydantic): a body one accepts the other accepts with the same values,
and a body either refuses gets pydantic's 4xx: the same status, reason and errors. Both
request forms, rows (`items`) and columns (`columns`): the same request in either form is
the same columns to the pipeline and the same ranking, and a bad value the same 4xx."""

import asyncio
import json
import random

import msgspec
import numpy as np
import pytest

from loadtest.traffic import as_columns
from service.bundle import Bundle
from service.features import build_inputs
from service.item_columns import item_columns
from service.rank_body import decode
from service.rejections import Rejected, parse_json
from service.schemas import FLOAT32_MAX, RankRequest
from tests.conftest import dicts_in

MAX_ITEMS = 5
BODY = {
    "query": {"text": "usb hub", "category": "c", "scenario": "US", "platform": "general"},
    "items": [
        {"id": "a", "title": "a hub", "features": {"price": 1.5, "rating": 4}, "categorical": {}},
        {"id": "b", "features": {"price": -2e30}, "categorical": {"brand": "x"}},
        {"id": "c", "title": None},
    ],
    "top_n": 2,
    "user_id": "u1",
}


COLUMNS = as_columns(BODY)


def documented(content: bytes):
    """pydantic's verdict: the values, or (status, reason, errors)."""
    try:
        return parse_json(RankRequest, content, {"max_items": MAX_ITEMS}).model_dump()
    except Rejected as refused:
        return refused.status, refused.reason, refused.errors


def decoded(content: bytes):
    try:
        return msgspec.to_builtins(decode(content, MAX_ITEMS))
    except Rejected as refused:
        return refused.status, refused.reason, refused.errors


def edit(change) -> bytes:
    body = json.loads(json.dumps(BODY))
    change(body)
    return json.dumps(body).encode()


def raw(old: str, new: str, body: dict = BODY) -> bytes:
    text = json.dumps(body)
    assert old in text
    return text.replace(old, new, 1).encode()


def edit_columns(change) -> bytes:
    body = json.loads(json.dumps(COLUMNS))
    change(body["columns"])
    return json.dumps(body).encode()


def twin_columns(ids: list[str]) -> dict:
    return {"id": ids, "features": {"price": [1.0] * len(ids)}}


CASES = {
    "valid": json.dumps(BODY).encode(),
    "valid, top_n 3.0": edit(lambda b: b.update(top_n=3.0)),
    "valid, huge top_n": edit(lambda b: b.update(top_n=2**70)),
    "valid, float32 bounds": edit(lambda b: b["items"][0]["features"].update(p=FLOAT32_MAX)),
    "valid, texts at their length limits in astral characters": edit(
        lambda b: (b["query"].update(text="😀" * 4096), b["items"][0].update(id="é" * 256))
    ),
    "malformed JSON": b"{",
    "truncated JSON": json.dumps(BODY).encode()[:60],
    "empty body": b"",
    "not UTF-8": json.dumps(BODY).encode().replace(b'"text": "', b'"text": "\xff\xfe', 1),
    "lone surrogate": raw('"text": "', '"text": "\\ud800'),
    "deep nesting": b'{"query": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "not an object": b"[1, 2]",
    "null": b"null",
    "NaN": raw('"price": 1.5', '"price": NaN'),
    "-Infinity": raw('"price": 1.5', '"price": -Infinity'),
    "overflow to inf": raw('"price": 1.5', '"price": 1e999'),
    "beyond float32": raw('"price": 1.5', '"price": 3.5e38'),
    "string for a number": edit(lambda b: b["items"][0]["features"].update(price="1.5")),
    "bool for a number": edit(lambda b: b["items"][0]["features"].update(price=True)),
    "null for a number": edit(lambda b: b["items"][0]["features"].update(price=None)),
    "number for an id": edit(lambda b: b["items"][1].update(id=17)),
    "number for a category": edit(lambda b: b["items"][1]["categorical"].update(brand=3)),
    "list for features": edit(lambda b: b["items"][1].update(features=[1.0])),
    "null query text": edit(lambda b: b["query"].update(text=None)),
    "missing query": edit(lambda b: b.pop("query")),
    "missing query text": edit(lambda b: b["query"].pop("text")),
    "missing items": edit(lambda b: b.pop("items")),
    "missing item id": edit(lambda b: b["items"][2].pop("id")),
    "items not a list": edit(lambda b: b.update(items={})),
    "empty items": edit(lambda b: b.update(items=[])),
    "too many items": edit(lambda b: b.update(items=[{"id": str(n)} for n in range(6)])),
    "duplicate ids": edit(lambda b: b["items"].append({"id": "b"})),
    "too many items and duplicate ids": edit(lambda b: b.update(items=[{"id": "a"}] * 7)),
    "unknown field": edit(lambda b: b.update(surprise=1)),
    "unknown query field": edit(lambda b: b["query"].update(colour="red")),
    "unknown item field": edit(lambda b: b["items"][0].update(colour="red")),
    "top_n zero": edit(lambda b: b.update(top_n=0)),
    "top_n 3.5": edit(lambda b: b.update(top_n=3.5)),
    "top_n string": edit(lambda b: b.update(top_n="3")),
    "top_n true": edit(lambda b: b.update(top_n=True)),
    "query text too long": edit(lambda b: b["query"].update(text="q" * 4097)),
    "empty query text": edit(lambda b: b["query"].update(text="")),
    "empty category": edit(lambda b: b["query"].update(category="")),
    "empty id": edit(lambda b: b["items"][0].update(id="")),
    "id too long": edit(lambda b: b["items"][0].update(id="i" * 257)),
    "title too long": edit(lambda b: b["items"][0].update(title="t" * 16_385)),
    "model name too long": edit(lambda b: b.update(model="m" * 65)),
    "empty user_id": edit(lambda b: b.update(user_id="")),
    # The columnar form: each row case above that concerns an item has its twin here (TWINS).
    "valid columns": json.dumps(COLUMNS).encode(),
    "valid columns without titles or categorical": edit_columns(
        lambda c: (c.pop("title"), c.pop("categorical"))
    ),
    "valid columns, a feature null for every item": edit_columns(
        lambda c: c["features"].update(rating=[None] * 3)
    ),
    "columns: NaN": raw('"price": [1.5', '"price": [NaN', COLUMNS),
    "columns: -Infinity": raw('"price": [1.5', '"price": [-Infinity', COLUMNS),
    "columns: overflow to inf": raw('"price": [1.5', '"price": [1e999', COLUMNS),
    "columns: beyond float32": raw('"price": [1.5', '"price": [3.5e38', COLUMNS),
    "columns: string for a number": edit_columns(
        lambda c: c["features"]["price"].__setitem__(0, "1")
    ),
    "columns: bool for a number": edit_columns(
        lambda c: c["features"]["price"].__setitem__(0, True)
    ),
    "columns: number for an id": edit_columns(lambda c: c["id"].__setitem__(1, 17)),
    "columns: null for an id": edit_columns(lambda c: c["id"].__setitem__(1, None)),
    "columns: number for a category": edit_columns(
        lambda c: c["categorical"]["brand"].__setitem__(1, 3)
    ),
    "columns: a number for a feature column": edit_columns(lambda c: c["features"].update(x=1.0)),
    "columns: missing ids": edit_columns(lambda c: c.pop("id")),
    "columns: not an object": edit(lambda b: (b.pop("items"), b.update(columns=[]))),
    "columns: empty": edit(lambda b: (b.pop("items"), b.update(columns={"id": []}))),
    "columns: too many items": edit(
        lambda b: (b.pop("items"), b.update(columns={"id": [str(n) for n in range(6)]}))
    ),
    "columns: duplicate ids": edit_columns(lambda c: c["id"].__setitem__(2, "b")),
    "columns: different lengths": edit_columns(lambda c: c["features"]["price"].append(2.0)),
    "columns: a short title column": edit_columns(lambda c: c["title"].pop()),
    "columns: unknown field": edit_columns(lambda c: c.update(colour=["red"] * 3)),
    "columns: empty id": edit_columns(lambda c: c["id"].__setitem__(0, "")),
    "columns: id too long": edit_columns(lambda c: c["id"].__setitem__(0, "i" * 257)),
    "columns: title too long": edit_columns(lambda c: c["title"].__setitem__(0, "t" * 16_385)),
    "items and columns": edit(lambda b: b.update(columns=COLUMNS["columns"])),
    "neither items nor columns": edit(lambda b: b.pop("items")),
}
# Row case -> its columnar twin: the same status and reason, the field under `columns`.
TWINS = {
    "NaN": "columns: NaN",
    "-Infinity": "columns: -Infinity",
    "overflow to inf": "columns: overflow to inf",
    "beyond float32": "columns: beyond float32",
    "string for a number": "columns: string for a number",
    "bool for a number": "columns: bool for a number",
    "number for an id": "columns: number for an id",
    "number for a category": "columns: number for a category",
    "list for features": "columns: a number for a feature column",
    "missing item id": "columns: missing ids",
    "items not a list": "columns: not an object",
    "empty items": "columns: empty",
    "too many items": "columns: too many items",
    "duplicate ids": "columns: duplicate ids",
    "unknown item field": "columns: unknown field",
    "empty id": "columns: empty id",
    "id too long": "columns: id too long",
    "title too long": "columns: title too long",
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_decoder_gives_the_documented_schema_verdict(case):
    verdict = documented(CASES[case])
    assert decoded(CASES[case]) == verdict
    assert isinstance(verdict, dict) == case.startswith("valid"), verdict


@pytest.mark.parametrize("row_case", list(TWINS))
def test_each_bad_row_value_has_a_columnar_twin_with_the_same_4xx(row_case):
    row, column = decoded(CASES[row_case]), decoded(CASES[TWINS[row_case]])
    assert (column[0], column[1]) == (row[0], row[1]), (row, column)
    assert column[2][0]["field"].startswith("columns"), column


def test_columns_of_different_lengths_are_a_422_naming_the_column_and_lengths():
    for case, column, count in [
        ("columns: different lengths", "features.price", 4),
        ("columns: a short title column", "title", 2),
    ]:
        expected = f"column {column} has {count} values, id has 3: one value per item"
        assert decoded(CASES[case]) == (
            422,
            "invalid_value",
            [{"field": "columns", "message": expected}],
        )


def test_more_items_than_the_limit_get_the_row_forms_4xx():
    rows = decoded(CASES["too many items"])
    assert rows == (422, "too_many_items", [{"field": "items", "message": "6 items, at most 5"}])
    columns = decoded(CASES["columns: too many items"])
    assert columns == (
        422,
        "too_many_items",
        [{"field": "columns.id", "message": rows[2][0]["message"]}],
    )


def test_both_forms_or_neither_is_a_422():
    both = decoded(CASES["items and columns"])
    assert both[:2] == (422, "invalid_value") and "both were sent" in both[2][0]["message"]
    neither = decoded(CASES["neither items nor columns"])
    assert neither[:2] == (422, "missing_field") and "neither was sent" in neither[2][0]["message"]


def test_the_row_and_columnar_forms_decode_to_the_same_columns():
    rows = item_columns(decode(json.dumps(BODY).encode(), MAX_ITEMS))
    columns = item_columns(decode(json.dumps(COLUMNS).encode(), MAX_ITEMS))
    assert (rows.sent_as, columns.sent_as) == ("items", "columns")
    assert rows.features == {"price": [1.5, -2e30, None], "rating": [4.0, None, None]}
    assert rows.categorical == {"brand": [None, "x", None]}
    for part in ("ids", "titles", "features", "categorical"):
        assert getattr(rows, part) == getattr(columns, part), part


def test_the_row_and_columnar_forms_give_the_same_inputs_and_ranking(small_bundle, service_env):
    """Through the pipeline in-process (the Runtime `python -m service` builds): the same
    model inputs, imputations and OOV counts, the same answer; an unknown feature the same
    422, naming the item in the row form and the column in the columnar form."""
    from service.runtime import Runtime
    from service.settings import Settings

    body = json.loads((small_bundle[1] / "example_request.json").read_text())
    body["top_n"] = None
    for row, item in enumerate(body["items"][:6]):  # values left out: imputed, OOV
        item["features"].pop(sorted(item["features"])[row % 2])
        item["categorical"].pop(sorted(item["categorical"])[row % 2])
    bodies = {"items": json.dumps(body).encode(), "columns": json.dumps(as_columns(body)).encode()}
    settings = Settings(**{k.removeprefix("MOERANK_").lower(): v for k, v in service_env.items()})

    async def rank_both():
        runtime = await Runtime.start(settings)
        try:
            return {
                form: await runtime.ranking.rank(content, request_id="r1")
                for form, content in bodies.items()
            }
        finally:
            await runtime.stop()

    rows, columns = asyncio.run(rank_both()).values()
    assert rows.inputs.imputed_features >= 6 and rows.inputs.oov_categories >= 6
    assert rows.inputs.imputed_features == columns.inputs.imputed_features
    assert rows.inputs.oov_categories == columns.inputs.oov_categories
    for row_tensor, column_tensor in zip(rows.tensors, columns.tensors, strict=True):
        np.testing.assert_array_equal(row_tensor, column_tensor)
    assert rows.body == columns.body
    assert len(json.loads(rows.body)["items"]) == len(body["items"])

    bundle = Bundle(small_bundle[0], provider="cpu")
    body["items"][1]["features"]["nope"] = 1.0
    for form, field in [("items", "items.1.features.nope"), ("columns", "columns.features.nope")]:
        request = decode(json.dumps(body if form == "items" else as_columns(body)).encode(), 50)
        with pytest.raises(Rejected) as refused:
            build_inputs(bundle, request.query, item_columns(request))
        assert (refused.value.reason, refused.value.errors[0]["field"]) == (
            "unknown_feature",
            field,
        )


def test_randomly_damaged_bodies_get_the_same_verdict_from_both():
    """Values replaced by other types, keys dropped, bytes flipped (seeded), in rows and
    in columns."""
    rng = random.Random(17)
    odd = [
        None,
        [],
        {},
        "",
        "x" * 300,
        -1,
        0,
        1,
        2.0,
        2.5,
        2**70,
        1e308,
        -0.0,
        True,
        [1.5],
        {"a": 1},
    ]
    verdicts = set()
    for _ in range(2000):
        body = json.loads(json.dumps(rng.choice([BODY, COLUMNS])))
        for _ in range(rng.randint(1, 3)):
            target = rng.choice(dicts_in(body))
            key = rng.choice([*target, "extra", "id", "text", "title", "top_n"])
            if rng.random() < 0.3:
                target.pop(key, None)
            else:
                target[key] = json.loads(json.dumps(rng.choice(odd)))  # a fresh copy
        content = json.dumps(body).encode()
        if rng.random() < 0.2:
            cut = rng.randrange(len(content))
            content = content[:cut] + bytes([rng.randrange(256)]) + content[cut + 1 :]
        verdict = documented(content)
        assert decoded(content) == verdict, content
        verdicts.add("ok" if isinstance(verdict, dict) else verdict[1])
    assert {"ok", "malformed_json", "invalid_value", "missing_field", "unknown_field"} <= verdicts


def test_the_structs_have_the_documented_fields():
    from service import rank_body, schemas

    for name in ("RankRequest", "Query", "Item", "Columns"):
        struct, model = getattr(rank_body, name), getattr(schemas, name)
        assert struct.__struct_fields__ == tuple(model.model_fields), name
