"""Readers of real data sets: each maps a public log onto the dataset contract
(contract/schema.py); `sets.read_real_set(name)` is the entry point."""
