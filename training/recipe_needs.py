"""What a recipe needs from the data, checked before any encoding or training starts.

`fit_recipe` takes a model name, the user's `--set` options and what the data has (its
request-level fields, its tasks, text or not, how many other inputs) and returns the
recipe's config for this data, or the problems, one line each:

- the tasks are the data's (the spec's binary tasks or graded cascade); a `tasks` option
  that names others is a problem;
- a recipe that needs a field the data lacks says so: HMoE's scenario towers need a
  scenario, WE-CAN's domains a platform, HSC's constraint gate a top-category, MMoE
  category buckets a query category;
- multi-task machinery (MLPR's task attention, probability transfer, HMoE's pCTR/pCTCVR
  heads) needs at least two tasks;
- gates read request fields: a recipe's DEFAULT gate inputs keep the fields the data has,
  and read the query text in place of the missing ones when the model reads text (so
  `mlpr` gates on (query_text, item) for text-only data); gate inputs the user SET are
  taken as given, and a field among them that the data lacks is a problem.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from contract.features import REQUEST_CATEGORICAL, SCENARIO
from training.models import registry

PLATFORM_FIELD = "platform"


@dataclass(frozen=True)
class DataFields:
    """What a data set offers a model."""

    request_fields: tuple[str, ...]  # of REQUEST_CATEGORICAL
    tasks: tuple[str, ...]
    has_text: bool
    other_inputs: int  # numeric + item categorical features


@dataclass(frozen=True)
class RecipeFit:
    config: object | None  # the family's config for this data; None when problems
    notes: tuple[str, ...]  # what was adapted, for the run's record
    problems: tuple[str, ...]


def fit_recipe(name: str, options: dict, data: DataFields) -> RecipeFit:
    try:
        family = registry.family_of_name(name)
    except ValueError as error:
        return RecipeFit(None, (), (str(error),))
    given = dict(options)
    problems: list[str] = []
    notes: list[str] = []
    if "tasks" in given and tuple(given["tasks"]) != data.tasks:
        problems.append(
            f"--set tasks={tuple(given['tasks'])} but the data's tasks are {data.tasks} "
            "(the spec's labels decide them)"
        )
    given["tasks"] = data.tasks
    try:
        config = registry.config_for(name, **given)
    except (ValueError, TypeError) as error:
        return RecipeFit(None, (), (*problems, str(error)))
    if hasattr(config, "gate_inputs") and _has_gates(family, config):
        gate_inputs, note, problem = _gate_inputs(
            name, config.gate_inputs, "gate_inputs" in options, data
        )
        problems += [problem] if problem else []
        notes += [note] if note else []
        config = replace(config, gate_inputs=gate_inputs)
    problems += _field_problems(name, family, config, data)
    if len(data.tasks) < 2 and _needs_tasks(family, config):
        problems.append(
            f"model {name!r} needs at least two tasks (a cascade such as click -> purchase, or "
            f"a graded label with two or more cascade thresholds); the data has {data.tasks}"
        )
    if family == "text_match" and not data.has_text:
        problems.append(
            f"model {name!r} ranks by the query-item text match: name item_text in the spec "
            "(and do not pass --no-text), or choose another model"
        )
    if not (data.request_fields or data.has_text or data.other_inputs):
        problems.append(
            "the data gives a model no inputs: name numeric or categorical features, a "
            "request field (category ...) or item_text in the spec"
        )
    if problems:
        return RecipeFit(None, tuple(notes), tuple(problems))
    return RecipeFit(config, tuple(notes), ())


def options_of(config) -> dict:
    """A config as plain values (for run.json)."""
    return {f.name: getattr(config, f.name) for f in fields(config)}


def _has_gates(family: str, config) -> bool:
    if family == "multitask":
        return config.experts + config.specific_experts > 1
    return family == "category_moe" and config.experts > 1


def _gate_inputs(
    name: str, inputs: tuple[str, ...], user_set: bool, data: DataFields
) -> tuple[tuple[str, ...], str, str]:
    """(gate inputs for this data, a note on what changed, a problem)."""
    available = set(data.request_fields) | ({"query_text"} if data.has_text else set())
    wanted = [n for n in inputs if n != "item"]
    missing = [n for n in wanted if n not in available]
    if not missing:
        return inputs, "", ""
    if user_set:
        return (
            inputs,
            "",
            f"gate_inputs {list(missing)} are not in the data (it has {sorted(available) or 'none'})",
        )
    kept = [n for n in inputs if n not in missing]
    if (
        data.has_text
        and "query_text" not in kept
        and any(n in REQUEST_CATEGORICAL for n in missing)
    ):
        kept.insert(len([n for n in kept if n != "item"]), "query_text")
    if not kept:
        return (
            inputs,
            "",
            (
                f"model {name!r} gates on {list(inputs)}, none of which the data has: name one of "
                f"them in the spec's [columns] or set gate_inputs"
            ),
        )
    note = f"gate_inputs {tuple(inputs)} -> {tuple(kept)} (the data lacks {missing})"
    return tuple(kept), note, ""


def _field_problems(name: str, family: str, config, data: DataFields) -> list[str]:
    needs: list[tuple[str, str]] = []  # (field, what for)
    if family == "hmoe" and (config.scenario_towers or config.stacked):
        needs.append((SCENARIO, "its scenario towers"))
    if family == "wecan" and (config.domain_attention or config.private):
        needs.append((PLATFORM_FIELD, "its per-platform domains"))
    if family == "category_moe":
        if config.hsc_weight:
            needs.append(("top_category", "its HSC constraint gate"))
        if config.category_buckets:
            needs.append(("query_category", "its category buckets"))
    role = {"query_category": "category"}
    return [
        f"model {name!r} needs a {field} column for {why}: name [columns] "
        f"{role.get(field, field)} in the spec, or choose another model"
        for field, why in needs
        if field not in data.request_fields
    ]


def _needs_tasks(family: str, config) -> bool:
    if family == "multitask":
        return config.attention != "none" or config.probability_transfer
    return family == "hmoe"
