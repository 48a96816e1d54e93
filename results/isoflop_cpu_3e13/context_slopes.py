"""How fast each budget's best run's loss falls with compute, by context length.

Reads context_loss.json (python -m evaluation.context_loss ... --out, every run of the sweep) and
results.jsonl, takes each budget's lowest eval loss (the verification run for its own budget), averages
its loss per position over windows of context, and prints the slope d log L / d log C between
neighbouring budgets for each window, and how much faster the loss past 32 tokens falls than that at 4-15.

    python results/isoflop_cpu_3e13/context_slopes.py > results/isoflop_cpu_3e13/context_slopes.txt
"""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
WINDOWS = [(0, 4), (4, 16), (16, 32), (32, 128), (0, 128)]
SHORT, LONG = (4, 16), (32, 128)

curves = {row["run"]: np.array(row["loss_per_position"]) for row in
          json.loads((HERE / "context_loss.json").read_text())["runs"]}
best = {}
for line in (HERE / "results.jsonl").read_text().splitlines():
    row = json.loads(line)
    if row["run"] in curves and (row["budget"] not in best or row["final_eval_loss"] < best[row["budget"]][1]):
        best[row["budget"]] = (row["run"], row["final_eval_loss"])
budgets = sorted(best)
means = {w: np.array([curves[best[c][0]][w[0]:w[1]].mean() for c in budgets]) for w in WINDOWS}
print("mean loss over positions START:STOP of each budget's best run")
print(f"{'budget':>8s} {'run':16s} " + " ".join(f"{f'{a}:{b}':>8s}" for a, b in WINDOWS))
for i, c in enumerate(budgets):
    print(f"{c:8.1e} {best[c][0]:16s} " + " ".join(f"{means[w][i]:8.3f}" for w in WINDOWS))
print("\nslope d log L / d log C between neighbouring budgets, and the long-context slope over the short-context one")
print(f"{'from':>8s} {'to':>8s} " + " ".join(f"{f'{a}:{b}':>8s}" for a, b in WINDOWS) + f" {LONG[0]}:{LONG[1]} / {SHORT[0]}:{SHORT[1]}")
for i in range(len(budgets) - 1):
    step = np.log(budgets[i + 1] / budgets[i])
    slopes = {w: np.log(means[w][i + 1] / means[w][i]) / step for w in WINDOWS}
    print(f"{budgets[i]:8.1e} {budgets[i + 1]:8.1e} " + " ".join(f"{slopes[w]:8.3f}" for w in WINDOWS)
          + f" {slopes[LONG] / slopes[SHORT]:8.2f}")
