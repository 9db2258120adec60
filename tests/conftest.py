"""Shared fixtures: a small hand-made feature spec and random inputs for model-part tests."""

from __future__ import annotations

import pytest
import torch

from training.features import CategoricalField, FeatureSpec, NumericField


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
    from training.data.generator import GeneratorConfig, generate

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
    from training.train import prepare

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
    from training import default_bundle
    from training.trainer import TrainConfig

    artifacts = tmp_path_factory.mktemp("artifacts")
    (artifacts / "data").mkdir()
    (artifacts / "data" / "searchlog").symlink_to(small_log_dir, target_is_directory=True)
    (artifacts / "encoder").symlink_to(encoder_dir, target_is_directory=True)
    bundle = artifacts / "bundles" / "default"
    default_bundle.build(artifacts, bundle, train=TrainConfig(epochs=1, lr=3e-3))
    return bundle, artifacts
