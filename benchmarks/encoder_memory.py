"""RSS of the serving text encoder over rounds of long titles: onnxruntime's CPU memory arena
on (the old setting) against off (service/text_encoder.py), at a batch size.

    python benchmarks/encoder_memory.py --encoder artifacts/encoder [--titles 64] [--rounds 4]

Each configuration runs in its own process (RSS is per process). Writes
results/encoder_memory.json: per configuration the RSS after loading and after each round,
and the seconds per round.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import subprocess
import sys
import time
from pathlib import Path

from training.results import cpu_model, write_results


def title(rng: random.Random, chars: int) -> str:
    words = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))))
    return " ".join(words)[:chars]


def measure(encoder: str, arena: bool, batch: int, titles: int, rounds: int) -> dict:
    """In this process: load, then encode `rounds` x `titles` fresh 2,048-character titles."""
    import onnxruntime as ort
    import psutil

    from service.text_encoder import OnnxTextEncoder

    model = OnnxTextEncoder(encoder, "int8", threads=1)
    # The service's session, rebuilt with only the arena setting changed.
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    path = Path(encoder) / model.config["variants"]["int8"]["file"]
    model.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    process, rng = psutil.Process(), random.Random(0)
    row = {"arena": arena, "batch": batch, "rss_mb_loaded": process.memory_info().rss >> 20}
    row["rss_mb_after_round"], row["seconds_per_round"] = [], []
    for _ in range(rounds):
        texts = [title(rng, 2048) for _ in range(titles)]
        start = time.perf_counter()
        model.encode(texts, batch_size=batch)
        row["seconds_per_round"].append(round(time.perf_counter() - start, 2))
        row["rss_mb_after_round"].append(process.memory_info().rss >> 20)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--titles", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # "arena,batch": run one, print JSON
    args = parser.parse_args()
    if args.one:
        arena, batch = args.one.split(",")
        print(
            json.dumps(measure(args.encoder, arena == "on", int(batch), args.titles, args.rounds))
        )
        return
    rows = []
    for arena, batch in (("on", 64), ("on", 16), ("off", 64), ("off", 16)):
        run = subprocess.run(
            [sys.executable, __file__, "--encoder", args.encoder, "--titles", str(args.titles),
             "--rounds", str(args.rounds), "--one", f"{arena},{batch}"],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(write_results("encoder_memory", rows, {"cpu_model": cpu_model(), "title_chars": 2048}))


if __name__ == "__main__":
    main()
