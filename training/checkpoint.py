"""Checkpoints: everything export needs to rebuild a trained model, in plain types only
(loadable with torch.load(weights_only=True))."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from contract.features import FeatureSpec
from training.models import registry


def save_checkpoint(
    path: Path,
    name: str,
    model: torch.nn.Module,
    spec: FeatureSpec,
    metrics: dict,
    category_counts: torch.Tensor | None = None,
) -> None:
    torch.save(
        {
            "name": name,
            "family": registry.family_of_model(model),
            "config": asdict(model.config),
            "spec": spec.to_dict(),
            "state_dict": model.state_dict(),
            "metrics": metrics,
            "category_counts": category_counts,
        },
        path,
    )


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    """The model in eval mode and the checkpoint's metadata (name, family, config, spec, metrics)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = registry.config_from_dict(ckpt["family"], ckpt["config"])
    spec = FeatureSpec.from_dict(ckpt["spec"])
    model = registry.build(ckpt["family"], config, spec, ckpt["category_counts"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
