"""The search-log simulator: a catalog, categories, shoppers and sessions that write the
dataset contract (contract/schema.py) with known ground truth. CLI: training.data.generate."""
