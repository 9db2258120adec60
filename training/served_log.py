"""The served log (contract/served_log.py) -> the dataset contract: one impressions row per
item the service returned, with exactly the feature values its model saw, labelled by the
events sent back for it.

    python -m training.served_log LOG_DIR OUT_DIR   # writes OUT_DIR/impressions.parquet

Rows: every returned item of every answered request (a session of the contract is one
answer: session_id = request_id), position = its rank in the answer. Labels: click, atc
(an add_to_cart event) and purchase per (request_id, item_id); the cascade is completed
upwards, so a purchase without a logged click still counts as a click and an add-to-cart,
as the contract requires (a later stage implies the earlier). Events whose request the log
does not hold (the answer's record lost or in another log) are left out, and counted.
Columns beyond the contract: the numeric and categorical features under their own names,
`served_model`, `served_experiment`, `served_variant`, `served_score`, `served_ts`,
`embedding` (vector / zero / none: what the model had for the item's text).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from contract import schema
from contract.served_log import EventRecord, ReadStats, ServedRecord, read_records
from training.data.real.readers import finish

LABEL_OF_EVENT = {"click": "click", "add_to_cart": "atc", "purchase": "purchase"}


@dataclass
class Conversion:
    frame: pd.DataFrame
    read: ReadStats = field(default_factory=ReadStats)
    served: int = 0
    events: int = 0
    events_without_answer: int = 0


def to_impressions(log_dir: str | Path) -> Conversion:
    """Read every segment of `log_dir` into a contract frame (see the module docstring)."""
    stats = ReadStats()
    served: dict[str, ServedRecord] = {}
    labels: dict[tuple[str, str], set[str]] = defaultdict(set)
    events = 0
    for record in read_records(log_dir, stats):
        if isinstance(record, ServedRecord):
            served[record.request_id] = record
        elif isinstance(record, EventRecord):
            events += 1
            if record.type in LABEL_OF_EVENT:
                labels[(record.request_id, record.item_id)].add(LABEL_OF_EVENT[record.type])
    orphans = sum(1 for request_id, _ in labels if request_id not in served)
    rows = [row for answer in served.values() for row in _rows(answer, labels)]
    frame = finish(pd.DataFrame(rows)) if rows else pd.DataFrame()
    return Conversion(frame, stats, len(served), events, orphans)


def _rows(answer: ServedRecord, labels: dict[tuple[str, str], set[str]]) -> list[dict]:
    query = answer.query
    rows = []
    for item in answer.items:
        got = labels.get((answer.request_id, item.id), set())
        purchase = "purchase" in got
        atc = purchase or "atc" in got
        rows.append(
            {
                schema.SESSION_ID: answer.request_id,
                schema.QUERY_TEXT: query.text,
                schema.QUERY_CATEGORY: query.category,
                schema.TOP_CATEGORY: query.top_category,
                schema.SCENARIO: query.scenario,
                schema.PLATFORM: query.platform,
                schema.ITEM_ID: item.id,
                schema.POSITION: item.position,
                "click": int(atc or "click" in got),
                "atc": int(atc),
                "purchase": int(purchase),
                **item.numeric,
                **item.categorical,
                "embedding": item.embedding,
                "served_model": answer.model,
                "served_experiment": answer.experiment,
                "served_variant": answer.variant,
                "served_score": item.score,
                "served_ts": answer.ts,
            }
        )
    return rows


def write_training_set(log_dir: str | Path, out_dir: str | Path) -> Conversion:
    """to_impressions, written as OUT_DIR/impressions.parquet (what training.train reads)."""
    conversion = to_impressions(log_dir)
    if conversion.frame.empty:
        raise ValueError(f"{log_dir} holds no answered requests")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conversion.frame.to_parquet(out / "impressions.parquet", index=False)
    return conversion


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.served_log", description=__doc__)
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    done = write_training_set(args.log_dir, args.out_dir)
    print(
        f"{len(done.frame)} impressions from {done.served} answers and {done.events} events "
        f"({done.events_without_answer} (request, item) labels without their answer, "
        f"{done.read.unreadable_lines} unreadable lines) -> {args.out_dir / 'impressions.parquet'}"
    )


if __name__ == "__main__":
    main()
