"""Orchestration that spans stages: the online learning round, the experiment report."""
