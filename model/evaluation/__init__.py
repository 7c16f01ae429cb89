"""Measuring a model on a labelled dataset: `metrics` (pure scoring, no torch) and `runner` (asks a `Proposer`)."""
