"""The stage boundaries, read from the import graph: every module of every stage, every
import in it (function-level ones included), against the rules below.

    contract  -> nothing of the project; numpy and pydantic only (it installs with any extra)
    training  -> contract
    export    -> training, contract (and the service's text encoder and store URLs: ALLOWED)
    service   -> contract; never torch
    loadtest  -> contract; it speaks HTTP and reads data files with its own readers (the
                 simulated shoppers act by contract/user_model.py, the generator's own)
    pipelines -> training, export, loadtest, contract (orchestration spanning stages; the
                 service only over HTTP)
    infra     -> contract, loadtest (a local Redis Cluster, HAProxy and replicas for tests and
                 benchmarks; they start the service as a process)

tests/ and benchmarks/ may import anything: they check and measure the stages.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("contract", "training", "export", "service", "loadtest", "pipelines", "infra")
MAY_IMPORT = {
    "contract": set(),
    "training": {"contract"},
    "export": {"training", "contract"},
    "service": {"contract"},
    "loadtest": {"contract"},
    "pipelines": {"training", "export", "contract", "loadtest"},  # the service: over HTTP
    "infra": {"contract", "loadtest"},  # Redis Cluster, HAProxy, replicas as local processes
}
NEVER = {  # third-party packages a stage must not need
    "service": {"torch", "transformers", "sentence_transformers", "pandas", "pyarrow"},
    "loadtest": {"torch", "transformers", "sentence_transformers"},
}
CONTRACT_LIBRARIES = {"numpy", "pydantic"}
# (stage, module) -> why the crossing is wanted.
ALLOWED = {
    ("export", "service.text_encoder"): "export proves the text encoder's parity, and "
    "embed_items encodes the catalog, with the exact code the service runs online, so the "
    "stored vectors are the ones the service would compute",
    ("export", "service.redis_url"): "embed_items writes the service's store: it reads the "
    "store's URL (a server or a Redis Cluster) with the code the service reads it with",
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module
            found.append((node.lineno, module))
    return found


def forbidden(stage: str, module: str) -> bool:
    top = module.split(".")[0]
    if top == stage or (stage, module) in ALLOWED:
        return False
    if top in STAGES:
        return top not in MAY_IMPORT[stage]
    if stage == "contract":
        return top not in CONTRACT_LIBRARIES and top not in sys.stdlib_module_names
    return top in NEVER.get(stage, ())


def crossings(stage: str) -> list[str]:
    """'path:line imports module' for every forbidden import of the stage's modules."""
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / stage).rglob("*.py"))
        for line, module in imports_of(path)
        if forbidden(stage, module)
    ]


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_what_its_rules_allow(stage):
    if not (ROOT / stage).is_dir():
        pytest.skip(f"no {stage}/ in this tree")
    assert crossings(stage) == []


def test_the_rules_catch_a_crossing_anywhere_in_a_module(tmp_path, monkeypatch):
    """A function-level import and a relative one are found as well as a top-level one."""
    stage = tmp_path / "service"
    (stage / "inner").mkdir(parents=True)
    (stage / "inner" / "late.py").write_text(
        "import numpy\n\ndef f():\n    from training.data.real import sets\n    import torch\n"
    )
    (stage / "rel.py").write_text("from . import ranking\nfrom .inner import late\n")
    (tmp_path / "contract").mkdir()
    (tmp_path / "contract" / "x.py").write_text("import pandas\nimport json\nimport numpy\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert crossings("service") == [
        "service/inner/late.py:4 imports training.data.real",
        "service/inner/late.py:5 imports torch",
    ]
    assert crossings("contract") == ["contract/x.py:1 imports pandas"]
