"""Dataset contract, search-log simulator and readers of real data sets."""
