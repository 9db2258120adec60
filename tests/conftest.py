"""Shared fixtures: a small hand-made feature spec and random inputs for model-part tests."""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import replace

import pytest
import torch

from contract.features import CategoricalField, FeatureSpec, NumericField

# One intra-op thread: tests run beside other work, and oversubscribed OpenMP threads spin.
torch.set_num_threads(1)


def make_spec(text_dim: int = 0) -> FeatureSpec:
    def field(name, level, n):
        return CategoricalField(name, level, tuple(f"{name}{i}" for i in range(n)))

    return FeatureSpec(
        request_categorical=(
            field("query_category", "request", 12),
            field("top_category", "request", 3),
            field("scenario", "request", 5),
            field("platform", "request", 3),
        ),
        item_categorical=(field("brand", "item", 7), field("item_category", "item", 12)),
        numeric=tuple(NumericField(f"x{i}", 0.5, 2.0) for i in range(4)),
        text_dim=text_dim,
        encoder_id="test-encoder" if text_dim else "",
    )


def shared_category_spec():
    """make_spec with item categories named like the query's, one of them never queried."""
    spec = make_spec()
    query_vocab = spec.request_categorical[0].vocab
    item_vocab = (*query_vocab[2:], "never-queried")
    return replace(
        spec,
        item_categorical=(
            spec.item_categorical[0],
            CategoricalField("item_category", "item", item_vocab),
        ),
    )


def make_inputs(spec: FeatureSpec, requests: int, items: int, seed: int = 0) -> dict:
    """Random model inputs; requests = items (one query per row) or 1 (one request)."""
    g = torch.Generator().manual_seed(seed)

    def cats(fields, n):
        return torch.stack(
            [torch.randint(0, f.cardinality, (n,), generator=g) for f in fields], dim=1
        )

    inputs = {
        "request_cat": cats(spec.request_categorical, requests),
        "item_cat": cats(spec.item_categorical, items),
        "numeric": torch.randn(items, len(spec.numeric), generator=g),
    }
    if spec.text_dim:
        for key, n in (("query_emb", requests), ("item_emb", items)):
            v = torch.randn(n, spec.text_dim, generator=g)
            inputs[key] = v / v.norm(dim=1, keepdim=True)
    return inputs


@pytest.fixture
def spec() -> FeatureSpec:
    return make_spec()


@pytest.fixture
def text_spec() -> FeatureSpec:
    return make_spec(text_dim=24)


@pytest.fixture(scope="session")
def small_log_dir(tmp_path_factory):
    """A small generated search log (dense labels), written once per test session."""
    from training.data.simulator.generator import GeneratorConfig, generate

    out = tmp_path_factory.mktemp("searchlog")
    config = GeneratorConfig(
        impressions=40_000,
        seed=7,
        max_sub_categories=30,
        items_per_sub_category=100,
        rate_multiplier=4.0,
        calibration_sessions=500,
        show_progress=False,
    )
    generate(config, out)
    return out


@pytest.fixture(scope="session")
def small_log(small_log_dir):
    from training.fitting import prepare

    return prepare(small_log_dir, progress=False)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """The text encoder exported to ONNX once per test session."""
    from export.text_encoder import export_text_encoder

    out = tmp_path_factory.mktemp("encoder") / "encoder"
    export_text_encoder(out)
    return out


@pytest.fixture(scope="session")
def small_bundle(small_log_dir, encoder_dir, tmp_path_factory):
    """A small Adv & HSC-MoE bundle with text, built by the same code as the default bundle.
    Returns (bundle_dir, artifacts_dir)."""
    from pipelines import default_bundle
    from training.trainer import TrainConfig

    artifacts = tmp_path_factory.mktemp("artifacts")
    (artifacts / "data").mkdir()
    (artifacts / "data" / "searchlog").symlink_to(small_log_dir, target_is_directory=True)
    (artifacts / "encoder").symlink_to(encoder_dir, target_is_directory=True)
    bundle = artifacts / "bundles" / "default"
    default_bundle.build(artifacts, bundle, train=TrainConfig(epochs=1, lr=3e-3))
    return bundle, artifacts


def bundle_variant(original, directory, edit=None, model: bytes | None = None):
    """A bundle directory sharing `original`'s files (symlinks), with its manifest passed
    through `edit` and, if given, other model.onnx bytes."""
    import json
    import os

    directory.mkdir()
    for path in original.iterdir():  # the graphs and the text encoder
        if path.name != "manifest.json" and (model is None or path.name != "model.onnx"):
            os.symlink(path, directory / path.name)
    if model is not None:
        (directory / "model.onnx").write_bytes(model)
    manifest = json.loads((original / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps(edit(manifest) if edit else manifest))
    return directory


@pytest.fixture(scope="module")
def redis_prefix():
    """A key prefix of its own on the machine's Redis (127.0.0.1:6379), never flushed: the
    keys under it are deleted afterwards."""
    import uuid

    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    prefix = f"moerank-test-{uuid.uuid4().hex}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


class RedisServer:
    """A redis-server of the test's own on a free port, without persistence: the test may
    stop, pause (SIGSTOP: connections hang, as with a slow or unreachable host) and restart
    it. The machine's shared Redis is never touched."""

    def __init__(self, directory):
        from loadtest.service_process import free_port

        self.port, self.directory, self.proc = free_port(), directory, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def pause(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_env(small_bundle) -> dict[str, str]:
    """MOERANK_* settings serving the small bundle from the in-process store, preloaded with
    its item embeddings; tests add or override their own."""
    bundle, artifacts = small_bundle
    return {
        "MOERANK_BUNDLE_PATH": str(bundle),
        "MOERANK_EMBEDDING_STORE_PATH": str(artifacts / "item_embeddings.npz"),
        "MOERANK_REDIS_URL": "",
        "MOERANK_INTRA_OP_THREADS": "1",
        "MOERANK_INFERENCE_THREADS": "2",
        "MOERANK_WARMUP_CALLS": "1",
        # Most tests check what an online encode returns; test_service_redis checks the default
        # (background) mode.
        "MOERANK_COLD_ITEMS": "inline",
    }


class Traffic(threading.Thread):
    """Ranking calls sent one after another, each recorded as (phase, status, answer): the
    test moves `phase` along as it breaks things, then checks every answer."""

    def __init__(self, url: str, body: dict):
        super().__init__(daemon=True)
        self.url, self.body, self.phase = url, body, "start"
        self.records: list[tuple[str, int, dict]] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stopping.is_set():
                phase = self.phase
                try:
                    answer = client.post("/v1/rank", json=self.body)
                    self.records.append((phase, answer.status_code, answer.json()))
                except Exception as exc:  # a dropped connection is a failed request too
                    self.records.append((phase, 0, {"error": repr(exc)}))

    def answers(self, phase: str) -> list[dict]:
        return [answer for p, status, answer in self.records if p == phase and status == 200]

    def wait_for(self, condition, timeout_s: float) -> bool:
        """True once an answer recorded from now on meets `condition`."""
        deadline, start = time.monotonic() + timeout_s, len(self.records)
        while time.monotonic() < deadline:
            if any(status == 200 and condition(a) for _, status, a in self.records[start:]):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopping.set()
        self.join(60)


@pytest.fixture
def traffic():
    """Starts Traffic(url, body) threads; all are stopped at teardown."""
    started = []

    def start(url: str, body: dict) -> Traffic:
        thread = Traffic(url, body)
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


# ---- images built with podman, once a session (tests/test_image.py, tests/test_compose.py) --


def wait_ready(url: str, logs, timeout_s: float = 300) -> None:
    """Until `url`/readyz answers 200 (a container's ranker); `logs()` explains a timeout."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, logs()
        time.sleep(0.5)


MISSING_TOOLS = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
needs_podman = pytest.mark.skipif(
    bool(MISSING_TOOLS) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(MISSING_TOOLS) or 'podman, debootstrap'} "
    "(apt-get install podman runc debootstrap)",
)
PODMAN_TAGS = {
    "cpu": "localhost/moerank-test:cpu",
    "embed": "localhost/moerank-test:embed",
    "redis": "localhost/moerank-test:redis",
}


@pytest.fixture(scope="session")
def image_context(small_bundle, small_log_dir, tmp_path_factory):
    """The build context `make image` sees: the sources the images copy, and as ./artifacts
    the small bundle and its catalog."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bundle, artifacts = small_bundle
    context = tmp_path_factory.mktemp("context")
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy(root / name, context / name)
    for name in ("contract", "service", "export", "deploy/image"):
        shutil.copytree(root / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (
        "training/__init__.py",
        "training/data/__init__.py",
        "training/data/catalog_file.py",
        "training/data/spec.py",
        "training/data/real/__init__.py",
        "training/data/real/readers.py",
    ):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, context / name)
    shutil.copytree(bundle, context / "artifacts/bundles/default", symlinks=False)
    for name in ("item_embeddings.npz", "example_request.json"):
        shutil.copy(artifacts / name, context / "artifacts" / name)
    (context / "artifacts/data/searchlog").mkdir(parents=True)
    shutil.copy(small_log_dir / "catalog.parquet", context / "artifacts/data/searchlog")
    return context


def build_images(context, *targets: str) -> None:
    """deploy/image/build.sh (what `make image` and `make podman-up` run) for these targets,
    tagged PODMAN_TAGS; prints its report (seconds, sizes)."""
    import subprocess

    def image_id(tag: str) -> str:
        found = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag],
                               capture_output=True, text=True)  # fmt: skip
        return found.stdout.strip()

    tags = [PODMAN_TAGS[target] for target in targets]
    before = {tag: image_id(tag) for tag in tags}
    started = time.monotonic()
    built = subprocess.run(
        [str(context / "deploy/image/build.sh")],
        env={**os.environ, "CONTEXT": str(context), "TARGETS": " ".join(targets),
             "IMAGE": PODMAN_TAGS["cpu"], "EMBED_IMAGE": PODMAN_TAGS["embed"],
             "REDIS_IMAGE": PODMAN_TAGS["redis"]},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # Each session's bundle makes new images: drop the ones these tags held before.
    stale = [old for tag, old in before.items() if old and old != image_id(tag)]
    if stale:
        subprocess.run(["podman", "rmi", *stale], capture_output=True)
    report = [line for line in built.stdout.splitlines() if line.startswith("built ")]
    print(f"{'; '.join(report)} (this build: {time.monotonic() - started:.0f} s)")


@pytest.fixture(scope="session")
def cpu_image(image_context) -> str:
    build_images(image_context, "cpu")
    return PODMAN_TAGS["cpu"]


@pytest.fixture(scope="session")
def stack_images(image_context, cpu_image) -> dict[str, str]:
    """The compose stack's images: the ranker (cpu), the embeddings job and Redis."""
    build_images(image_context, "embed", "redis")
    return PODMAN_TAGS


def dicts_in(value) -> list[dict]:
    """Every JSON object inside `value`, itself included."""
    if isinstance(value, dict):
        return [value] + [d for v in value.values() for d in dicts_in(v)]
    if isinstance(value, list):
        return [d for v in value for d in dicts_in(v)]
    return []
