"""Model names -> (family, recipe): the one place that knows which class builds which model.

A family is a module class with a frozen config dataclass; a recipe is a named config.
Unknown names and options are errors.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from contract.features import FeatureSpec
from training.models import category_moe, hmoe, mlpr, text_match, wecan

# family name -> (model class, config class, recipes)
FAMILIES = {
    "category_moe": (
        category_moe.CategoryMoE,
        category_moe.CategoryMoEConfig,
        category_moe.RECIPES,
    ),
    "multitask": (mlpr.MultiTaskRanker, mlpr.MultiTaskConfig, mlpr.RECIPES),
    "hmoe": (hmoe.HMoE, hmoe.HMoEConfig, hmoe.RECIPES),
    "wecan": (wecan.WeCan, wecan.WeCanConfig, wecan.RECIPES),
    "text_match": (text_match.TextMatch, text_match.TextMatchConfig, text_match.RECIPES),
}


def family_of_name(name: str) -> str:
    for family, (_, _, recipes) in FAMILIES.items():
        if name in recipes:
            return family
    known = sorted(r for _, _, recipes in FAMILIES.values() for r in recipes)
    raise ValueError(f"unknown model {name!r}; choose from {known}")


def config_for(name: str, **overrides):
    """A named model's config with overrides applied."""
    _, config_cls, recipes = FAMILIES[family_of_name(name)]
    known = {f.name for f in fields(config_cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {name}; known: {sorted(known)}")
    return replace(recipes[name], **overrides)


def build(
    family: str, config, spec: FeatureSpec, category_counts: torch.Tensor | None = None
) -> torch.nn.Module:
    model_cls, _, _ = FAMILIES[family]
    return model_cls(spec, config, category_counts)


def config_from_dict(family: str, values: dict):
    """Rebuild a family's config from its checkpoint dict (lists back to tuples)."""
    _, config_cls, _ = FAMILIES[family]
    names = {f.name for f in fields(config_cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"checkpoint config has unknown option(s) {sorted(unknown)}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def family_of_model(model: torch.nn.Module) -> str:
    for family, (model_cls, _, _) in FAMILIES.items():
        if type(model) is model_cls:
            return family
    raise ValueError(f"no family for {type(model).__name__}")
