"""The /v1/rank decoder (service/rank_body.py, msgspec) against the API's documented schema
(schemas.RankRequest, pydantic): a body one accepts the other accepts with the same values,
and a body either refuses gets pydantic's 4xx: the same status, reason and errors."""

import json
import random

import msgspec
import pytest

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


def raw(old: str, new: str) -> bytes:
    text = json.dumps(BODY)
    assert old in text
    return text.replace(old, new, 1).encode()


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
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_decoder_gives_the_documented_schema_verdict(case):
    verdict = documented(CASES[case])
    assert decoded(CASES[case]) == verdict
    assert isinstance(verdict, dict) == case.startswith("valid"), verdict


def test_randomly_damaged_bodies_get_the_same_verdict_from_both():
    """Values replaced by other types, keys dropped, bytes flipped (seeded)."""
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
        body = json.loads(json.dumps(BODY))
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

    for name in ("RankRequest", "Query", "Item"):
        struct, model = getattr(rank_body, name), getattr(schemas, name)
        assert struct.__struct_fields__ == tuple(model.model_fields), name
