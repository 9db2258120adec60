"""Command line of the synthetic search-log generator.

    python -m training.data.generate --impressions 1000000 --seed 0 --out data/searchlog

writes `<out>/impressions.parquet`, `<out>/catalog.parquet` and `<out>/ground_truth.json`.
Every scalar knob of `GeneratorConfig` is an option (`--zipf-exponent 1.3`,
`--no-show-progress`), with the field's docstring as its help; tuple knobs (scenarios,
platforms, ...) are set from Python. Unknown or abbreviated options are errors.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap

from training.data.simulator.generator import GeneratorConfig, generate

_SCALAR_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def field_docs(cls) -> dict[str, str]:
    """The attribute docstring (string literal after the field) of each field of `cls`."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and is_doc and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def build_parser() -> argparse.ArgumentParser:
    """One option per scalar field of GeneratorConfig, plus --out."""
    parser = argparse.ArgumentParser(
        prog="python -m training.data.generate",
        description="Write a synthetic e-commerce search log (see training/data/simulator/generator.py).",
        allow_abbrev=False,
    )
    parser.add_argument("--out", required=True, help="Output directory.")
    docs = field_docs(GeneratorConfig)
    for spec in dataclasses.fields(GeneratorConfig):
        kind = _SCALAR_TYPES.get(str(spec.type))
        if kind is None:
            continue
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{docs.get(spec.name, '')} (default: {spec.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=spec.default, help=help_text
            )
        else:
            parser.add_argument(flag, type=kind, default=spec.default, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, generate the data set, print the per-scenario rates."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    try:
        config = GeneratorConfig(**args)
        truth = generate(config, out)
    except ValueError as error:
        parser.error(str(error))
    totals = truth["totals"]
    print(f"wrote {totals['impressions']} impressions, {totals['sessions']} sessions to {out}")
    for name, scenario in truth["scenarios"].items():
        target, realised = scenario["target"], scenario["realised"]
        print(
            f"{name}: CTR {realised['ctr']:.4f} (target {target['ctr']:.4f}), "
            f"CVR {realised['cvr']:.4f} (target {target['cvr']:.4f})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
