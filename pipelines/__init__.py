"""Orchestration that spans stages: the default bundle behind `make serve` (generate, train,
export, precompute embeddings), `make reproduce` (every paper experiment), the online
learning round and the experiment report. It may import training, export and contract; no
stage imports it."""
