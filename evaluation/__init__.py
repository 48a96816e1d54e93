"""Beyond loss: generation with a KV cache (generate.py) and few-shot tasks scored by log-likelihood (tasks.py)."""
