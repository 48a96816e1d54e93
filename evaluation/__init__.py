"""Beyond loss: generation from trained models (generate.py)."""
