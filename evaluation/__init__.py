"""Evaluation of exported bundles on labelled benchmarks (SKAB): protocols, reports and model selection."""
