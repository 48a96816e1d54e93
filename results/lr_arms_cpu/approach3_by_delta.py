"""Approach 3 on a sweep's runs from 1e12 up (Chinchilla accounting), at Hoffmann et al.'s Huber delta (1e-3) and
two larger ones: where a delta is far below the runs' residuals the objective is a least-absolute-deviations fit,
and at 0.1 (beyond every residual) it is least squares.

    python results/lr_arms_cpu/approach3_by_delta.py results/isoflop_cpu_lr/results.jsonl results/lr_arms_cpu/ninth_at_best_rates.jsonl
"""
import json
import sys

import numpy as np

from scaling import fit_chinchilla
from scaling.inputs import budget_window, fit_rows

for path in sys.argv[1:]:
    rows = fit_rows(budget_window([json.loads(line) for line in open(path)], 1e12))
    N, D, loss = (np.array([row[key] for row in rows], float) for key in ("params_total", "tokens", "final_eval_loss"))
    for delta in (1e-3, 1e-2, 1e-1):
        fit = fit_chinchilla(N, D, loss, bootstrap=200, delta=delta)
        low, high = fit.intervals["a"]
        print(f"{path}: {len(rows)} runs, delta {delta:g}: E {fit.E:.4f}, alpha {fit.alpha:.4f}, beta {fit.beta:.4f}, "
              f"a {fit.a:.4f} [{low:.3f}, {high:.3f}], {max(fit.a - low, high - fit.a):.3f} to the far end", flush=True)
