"""The ninth sweep's results.jsonl with each checked end run's loss replaced by the lowest of its rates' losses.

    python results/lr_arms_cpu/at_best_rates.py > results/lr_arms_cpu/ninth_at_best_rates.jsonl

A sensitivity check, not a sweep: the best of three rates is a little below what the law's rate would give even
at the right rate (the least of three noisy losses), and the other end runs keep the law's rate.
"""
import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
NINTH = os.path.join(HERE, "..", "isoflop_cpu_lr", "results.jsonl")
LOSS_FIELDS = ("final_loss", "final_eval_loss", "final_eval_loss_se", "final_eval_bpb", "final_eval_bpb_se")

best = {}
for path in sorted(glob.glob(os.path.join(HERE, "*", "results.jsonl"))):
    rows = [json.loads(line) for line in open(path)]
    lowest = min(rows, key=lambda row: row["final_eval_loss"])
    best[lowest["run"].rsplit("_peak_lr", 1)[0]] = lowest

for line in open(NINTH):
    row = json.loads(line)
    lowest = best.get(row["run"])
    if lowest is not None:
        row.update({key: lowest[key] for key in LOSS_FIELDS}, config=lowest["config"])
    print(json.dumps(row))
