"""Orchestration that spans stages: the default bundle behind `make serve` (generate, train,
export, precompute embeddings), `make reproduce` (every paper experiment), the online
learning round and the experiment report. It may import training, export, loadtest and
contract, and reaches the service over HTTP; no stage imports it."""
