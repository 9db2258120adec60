"""How long the service takes to answer or refuse the largest requests a caller can send,
with the default limits, through a real service (`python -m service`).

    python benchmarks/request_bounds.py --bundle artifacts/bundles/default \\
        --embeddings artifacts/item_embeddings.npz --example artifacts/example_request.json

Cases: 1,000 items of 100 KB titles (100 MB, sent whole before reading, as urllib does); a
1 MB query; a 10 MB header; the largest /v1/rank body under the 4 MiB limit (1,000 items of
~3,000-character unique cold titles, inline and background); a 1,000-character unique query.
Each is timed from the first byte sent to the last byte of the answer, `--repeat` times;
writes results/request_bounds.json (status and seconds per case, the worst of the repeats).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from loadtest.service_process import ServiceProcess
from training.results import cpu_model, write_results

TOKEN = "bench-bounds"


def post(url: str, body: bytes) -> tuple[int, float]:
    """urllib: the whole body first, then the answer (Connection: close)."""
    request = urllib.request.Request(url, body, {"content-type": "application/json"}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as refused:
        refused.read()
        status = refused.code
    except urllib.error.URLError:  # reset before an answer could be read
        status = 0
    return status, time.perf_counter() - start


def big_header(port: int) -> tuple[int, float]:
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    with contextlib.suppress(OSError):  # closed while we were still sending
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000_000 + b"\r\n\r\n"
        )
    answer = sock.recv(100)
    sock.close()
    return int(answer.split()[1]), time.perf_counter() - start


def cases(example: dict) -> dict:
    def cold(chars: int, n: int) -> bytes:
        tag = uuid.uuid4().hex
        items = [{**example["items"][k % len(example["items"])], "id": f"{tag}-{k}",
                  "title": f"{tag} {k} " + "merino wool socks " * (chars // 18)}
                 for k in range(n)]  # fmt: skip
        return json.dumps({**example, "items": items}).encode()

    def query(chars: int) -> bytes:
        text = uuid.uuid4().hex + " " + "q" * chars
        return json.dumps({**example, "query": {**example["query"], "text": text}}).encode()

    return {
        "1000_items_100kb_titles": lambda: cold(100_000, 1000),
        "1mb_query": lambda: query(1_000_000),
        "1000_items_3000_char_cold_titles": lambda: cold(3_000, 1000),
        "1000_char_unique_query": lambda: query(1_000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--example", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    example = json.loads(args.example.read_text())
    rows = []
    for mode in ("background", "inline"):
        env = {"MOERANK_BUNDLE_PATH": str(args.bundle), "MOERANK_COLD_ITEMS": mode,
               "MOERANK_EMBEDDING_STORE_PATH": str(args.embeddings)}  # fmt: skip
        with ServiceProcess(env) as service:
            url = f"{service.url}/v1/rank"
            measured = {name: [post(url, make()) for _ in range(args.repeat)]
                        for name, make in cases(example).items()}  # fmt: skip
            measured["10mb_header"] = [big_header(service.port) for _ in range(args.repeat)]
        for name, runs in measured.items():
            row = {"case": name, "cold_items": mode, "statuses": sorted({s for s, _ in runs}),
                   "worst_s": round(max(t for _, t in runs), 3)}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    print(
        write_results(
            "request_bounds",
            rows,
            {
                "cpu_model": cpu_model(),
                "load_average_1m": os.getloadavg()[0],
                "repeat": args.repeat,
            },
        )
    )


if __name__ == "__main__":
    main()
