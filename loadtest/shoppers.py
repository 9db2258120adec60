"""Simulated shoppers: the search-log generator's own users acting on the lists the service returns.

A shopper is a session of a generated log (`python -m training.data.generate`): its query,
its candidate items with their features, and, from ground_truth.json, the generator's true
user model. The shopper sends the query and candidates to /v1/rank, looks at the `top_n`
items it gets back in the order it gets them, and clicks, adds to cart and buys by the
generator's cascade: P(click) = (1 + position) ** -eta * sigmoid(true utility of the item for
this query, scenario and platform), then atc and purchase given the click
(`contract.user_model.cascade`). Every shown item is an impression. A better ranking
puts more attractive items where shoppers look, so online CTR measures the ranker, and the
expected CTR of the shown lists (the mean of P(click), no sampling noise) is known exactly.

The user model is contract/user_model.py, the one the generator draws its labels from, read
back from ground_truth.json (numpy only: loadtest needs neither torch nor training).

The shopper of session s is user `shopper-<s>`: a returning user repeats the same query
over the same candidates, and an experiment keyed on user_id keeps them in one variant.
Use a held-out log (same --seed, a distant --first-chunk) so that no model trained on the
sessions it is tested on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from contract import schema
from contract.user_model import UTILITY_FEATURES, Behaviour, Rows, behaviour_from, cascade
from loadtest.traffic import Log, read_log

EVENT_TYPES = ("click", "add_to_cart", "purchase")  # the cascade's stages, as /v1/events names
# Counted per variant: requests answered, impressions, the three stages drawn, and the
# three stages' expected counts under the true model (sums of probabilities).
TALLY_FIELDS = (
    "requests",
    "impressions",
    "clicks",
    "add_to_carts",
    "purchases",
    "expected_clicks",
    "expected_add_to_carts",
    "expected_purchases",
)


@dataclass(frozen=True)
class ShopperWorld:
    """A generated log as shoppers: request bodies (`log`), behaviour inputs of every logged
    row (`rows`, in the log's session/position order), session row bounds `starts`
    [n_sessions + 1], the item ids of each row and the true user model."""

    log: Log
    rows: Rows
    starts: np.ndarray
    item_ids: np.ndarray
    session_ids: np.ndarray
    behaviour: Behaviour

    @property
    def n_sessions(self) -> int:
        return len(self.starts) - 1

    def user_id(self, session: int) -> str:
        return f"shopper-{self.session_ids[session]}"

    def shown_rows(self, session: int, ranked_ids: list[str]) -> np.ndarray:
        """Row indexes of the items the service returned, in its order. KeyError for an id
        that was not among the session's candidates (a service bug worth failing on)."""
        start, stop = self.starts[session], self.starts[session + 1]
        offset = {item: start + j for j, item in enumerate(self.item_ids[start:stop])}
        return np.array([offset[item] for item in ranked_ids], dtype=np.int64)


def read_world(searchlog: str | Path) -> ShopperWorld:
    """The log's sessions (as traffic.read_log sends them) and the generator's user model."""
    searchlog = Path(searchlog)
    behaviour, index = behaviour_from(json.loads((searchlog / "ground_truth.json").read_text()))
    columns = [schema.SESSION_ID, schema.POSITION, schema.ITEM_ID, schema.RELEVANCE]
    columns += [schema.QUERY_CATEGORY, schema.SCENARIO, schema.PLATFORM, *UTILITY_FEATURES]
    frame = pd.read_parquet(searchlog / "impressions.parquet", columns=columns)
    frame = frame.sort_values([schema.SESSION_ID, schema.POSITION], kind="stable")  # as read_log
    sessions = frame[schema.SESSION_ID].to_numpy()
    starts = np.append(np.flatnonzero(np.diff(sessions, prepend=sessions[0] - 1)), len(frame))
    rows = Rows(
        features=frame[list(UTILITY_FEATURES)].to_numpy(np.float64),
        relevance=frame[schema.RELEVANCE].to_numpy(np.int64),
        position=np.zeros(len(frame), dtype=np.int64),  # set to the served position per answer
        sub=frame[schema.QUERY_CATEGORY].map(index["sub_category"]).to_numpy(np.int64),
        scenario=frame[schema.SCENARIO].map(index["scenario"]).to_numpy(np.int64),
        platform=frame[schema.PLATFORM].map(index["platform"]).to_numpy(np.int64),
    )
    log = read_log(searchlog)
    if len(log.queries) != len(starts) - 1:
        raise ValueError(f"{searchlog}: sessions disagree between the log and its rows")
    return ShopperWorld(
        log=log,
        rows=rows,
        starts=starts,
        item_ids=frame[schema.ITEM_ID].astype(str).to_numpy(),
        session_ids=sessions[starts[:-1]],
        behaviour=behaviour,
    )


def rank_body(world: ShopperWorld, session: int, top_n: int, routing: dict[str, str]) -> bytes:
    """/v1/rank JSON for a shopper: its query, every candidate it saw in the log, the page
    size, its user_id and `routing` ({"experiment": ..} or {"model": ..}, may be empty)."""
    items = b",".join(
        b'{"id":' + item_id + rest for item_id, rest in world.log.session_items[session]
    )
    extra = json.dumps({"top_n": top_n, "user_id": world.user_id(session), **routing})
    return (
        b'{"query":'
        + world.log.queries[session]
        + b',"items":['
        + items
        + b"],"
        + extra[1:].encode()
    )


@dataclass(frozen=True)
class Answer:
    """What a shopper needs from one /v1/rank answer: who, which arm, what it showed."""

    session: int
    request_id: str
    arm: str  # the variant, or the model's name when the request was in no experiment
    shown: np.ndarray  # row indexes into world.rows, in the order shown

    @classmethod
    def parse(cls, world: ShopperWorld, session: int, body: bytes) -> Answer:
        answer = json.loads(body)
        model = answer["model"]
        ranked = [item["id"] for item in answer["items"]]
        return cls(session, answer["request_id"], model.get("variant") or model["name"],
                   world.shown_rows(session, ranked))  # fmt: skip


@dataclass
class Tally:
    """Per arm counts (TALLY_FIELDS) of everything the shoppers were shown and did."""

    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, arm: str, values: np.ndarray) -> None:
        self.counts.setdefault(arm, np.zeros(len(TALLY_FIELDS)))
        self.counts[arm] += values

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            arm: {name: float(v) for name, v in zip(TALLY_FIELDS, values, strict=True)}
            for arm, values in sorted(self.counts.items())
        }


def shop(
    world: ShopperWorld, answers: list[Answer], rng: np.random.Generator, now: float
) -> tuple[list[dict], Tally]:
    """The shoppers of `answers` act on what they were shown: one cascade draw over all their
    rows at once (position = place in the answer). Returns the events for /v1/events (an
    impression per shown item, then each stage reached) and the tally of this batch."""
    shown = np.concatenate([a.shown for a in answers]) if answers else np.zeros(0, np.int64)
    positions = np.concatenate([np.arange(len(a.shown)) for a in answers]) if answers else shown
    rows = world.rows
    served = Rows(rows.features[shown], rows.relevance[shown], positions, rows.sub[shown],
                  rows.scenario[shown], rows.platform[shown])  # fmt: skip
    labels, reach = cascade(world.behaviour, served, rng)
    events, tally, at = [], Tally(), 0
    for answer in answers:
        n = len(answer.shown)
        mine, expected = labels[at : at + n], reach[at : at + n]
        for j in range(n):
            item = str(world.item_ids[answer.shown[j]])
            event = {
                "request_id": answer.request_id,
                "item_id": item,
                "position": j,
                "timestamp": now,
            }
            events.append({"type": "impression", **event})
            for stage, name in enumerate(EVENT_TYPES):
                if mine[j, stage]:
                    events.append({"type": name, **event})
        tally.add(answer.arm, np.array([1, n, *mine.sum(0), *expected.sum(0)], dtype=float))
        at += n
    return events, tally
