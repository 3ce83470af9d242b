"""The `edgevae` command line: train, export, score, evaluate and demo."""
