"""Evaluation, benchmarking and demo tooling (installed as ``tokpress.eval``)."""
