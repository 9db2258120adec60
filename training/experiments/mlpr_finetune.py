"""mlpr Table 3: what fine-tuning the text encoder buys, for MLP_MTL and MLPR.

Fine-tuning all of MiniLM is too slow here, so we tune the learned projection and the
encoder's last transformer layer (models/text_tail.py). Four settings per model and seed:
- "frozen, no projection": the encoder's 384-d vectors straight into the input block;
- "frozen + projection": the default, a learned projection to text_proj dims;
- "+ projection, continued": the previous model trained some more steps, text frozen (the
  control: the extra steps without touching the encoder);
- "+ last encoder layer": the same steps from the same model, jointly training the
  encoder's last layer at a transformer learning rate (TAIL_LR).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd

from contract.schema import ITEM_TITLE, TASKS
from training.dataset import TextTables
from training.experiments.mlpr_eval import lifts, metric_rows, print_table, summarise
from training.fitting import Prepared, fit
from training.models.text_tail import EncoderTail, FineTunedText, TokenStates, token_states
from training.results import locked, other_runs, write_results
from training.trainer import TrainConfig, predict, train

TAIL_LR = 1e-4  # the encoder layer's learning rate (BERT fine-tuning range)
SETTINGS = ("frozen, no projection", "frozen + projection", "+ projection, continued",
            "+ last encoder layer")  # fmt: skip


def table_texts(tables: TextTables, item_titles: list[str], encoder) -> dict[str, TokenStates]:
    """Token states of every row of the query and item tables (item_titles in table order)."""
    queries = sorted(tables.query_index, key=tables.query_index.get)
    return {"query": token_states(encoder, queries), "item": token_states(encoder, item_titles)}


def finetune_runs(
    prepared: Prepared,
    name: str,
    options: dict,
    config: TrainConfig,
    texts: dict[str, TokenStates],
    more: TrainConfig,
    encoder,
) -> dict[str, np.ndarray]:
    """{setting: test scores [n, T]} for one recipe and seed (config.seed); `more` is the
    continued training of the last two settings."""
    out = {}
    model, _ = fit(prepared, name, {**options, "text_proj": 0}, config, progress=False)
    out[SETTINGS[0]] = predict(model, prepared.test)
    model, _ = fit(prepared, name, options, config, progress=False)
    out[SETTINGS[1]] = predict(model, prepared.test)
    control = copy.deepcopy(model)
    train(control, prepared.train, prepared.valid, more, progress=False)
    out[SETTINGS[2]] = predict(control, prepared.test)
    tuned = FineTunedText(model, EncoderTail(encoder), texts, TAIL_LR / config.lr)
    train(tuned, prepared.train, prepared.valid, more, progress=False)
    out[SETTINGS[3]] = predict(tuned, prepared.test)
    return out


def table3(prepared: Prepared, size_config, size: str, data_dir, seeds, options: dict) -> None:
    """Table 3 on the generated log; writes results/mlpr_table3.json."""
    from training.text_encoder import default_encoder

    encoder = default_encoder()
    catalog = pd.read_parquet(data_dir / "catalog.parquet", columns=[ITEM_TITLE])
    texts = table_texts(prepared.train.text, catalog[ITEM_TITLE].astype(str).tolist(), encoder)
    test, rows = prepared.test, []
    for name in ("mlp_mtl", "mlpr"):
        for seed in seeds:
            config = replace(size_config.train, seed=seed)
            more = replace(config, epochs=1, max_steps_per_epoch=size_config.finetune_steps)
            runs = finetune_runs(prepared, name, options, config, texts, more, encoder)
            for setting, scores in runs.items():
                rows += metric_rows(f"{name} | {setting}", seed, TASKS, test.labels.numpy(),
                                    scores, test.sessions, recipe=name, setting=setting)  # fmt: skip
            print(f"  fine-tuning {name} seed {seed} done", flush=True)
    settings = {"size": size, "steps": size_config.finetune_steps, "tail_lr": TAIL_LR}
    with locked("mlpr_table3") as path:  # another process's seeds may be finishing too
        rows = other_runs(path, rows, settings)[0] + rows
        gains = {}
        for name in ("mlp_mtl", "mlpr"):
            mine = [r for r in rows if r["recipe"] == name]
            gains[name] = lifts(mine, baseline=f"{name} | {SETTINGS[1]}")
        extra = {**settings, "seeds": sorted({r["seed"] for r in rows}),
                 "summary": summarise(rows), "gain_over_frozen_projection": gains}  # fmt: skip
        write_results("mlpr_table3", rows, extra)
    print_table(f"Table 3 ({size}): fine-tuning the encoder's last layer", rows, TASKS)
