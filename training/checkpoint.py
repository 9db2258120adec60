"""Checkpoints: everything export needs to rebuild a trained model, in plain types only
(loadable with torch.load(weights_only=True))."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import torch

from training.features import FeatureSpec
from training.models.category_moe import CategoryMoE, CategoryMoEConfig

FAMILIES = {"category_moe": (CategoryMoE, CategoryMoEConfig)}


def _config_from_dict(cls, values: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"checkpoint config has unknown option(s) {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def family_of(model: torch.nn.Module) -> str:
    for name, (model_cls, _) in FAMILIES.items():
        if isinstance(model, model_cls):
            return name
    raise ValueError(f"no family for {type(model).__name__}")


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
            "family": family_of(model),
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
    model_cls, config_cls = FAMILIES[ckpt["family"]]
    spec = FeatureSpec.from_dict(ckpt["spec"])
    model = model_cls(spec, _config_from_dict(config_cls, ckpt["config"]), ckpt["category_counts"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
