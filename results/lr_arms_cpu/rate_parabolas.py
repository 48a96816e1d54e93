"""Per end run (its steps and tokens per step, which the batch rule sets): the parabola in log rate through the best rate tried and its two neighbours, its optimum against
the rate the ninth sweep's law gave that run, and the loss there.

    python results/lr_arms_cpu/rate_parabolas.py > results/lr_arms_cpu/rate_parabolas.txt
"""
import glob
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NINTH = {row["run"]: row for row in map(json.loads, open(os.path.join(HERE, "..", "isoflop_cpu_lr", "results.jsonl")))}


def rate(row):
    return row["config"]["lr_schedule.peak_lr"]


for path in sorted(glob.glob(os.path.join(HERE, "*", "results.jsonl"))):
    rows = sorted(map(json.loads, open(path)), key=rate)
    ninth = NINTH[rows[0]["run"].rsplit("_peak_lr", 1)[0]]
    law = next(row for row in rows if rate(row) == rate(ninth))
    losses = [row["final_eval_loss"] for row in rows]
    best = int(np.argmin(losses))
    centre = min(max(best, 1), len(rows) - 2)
    x = np.log([rate(row) for row in rows[centre - 1:centre + 2]])
    c2, c1, c0 = np.polyfit(x, losses[centre - 1:centre + 2], 2)
    vertex = -c1 / (2 * c2)
    at_vertex = np.polyval([c2, c1, c0], vertex)
    bracketed = "bracketed" if 0 < best < len(rows) - 1 else "NOT bracketed: the best rate tried is at an end"
    print(f"{os.path.basename(os.path.dirname(path))}: N {ninth['params_total']:,}, D/N {ninth['tokens'] / ninth['params_total']:.1f}, "
          f"{ninth['steps']:,} steps of {ninth['tokens'] / ninth['steps']:,.0f} tokens, "
          f"law's rate {rate(ninth):.4g}, {len(rows)} rates ({bracketed}); optimum {np.exp(vertex):.4g} "
          f"({np.exp(vertex) / rate(ninth):.2f}x the law's), loss there {at_vertex:.4f}, "
          f"{law['final_eval_loss'] - at_vertex:.4f} below the law's rate's")
