"""The ninth sweep's results.jsonl with each checked end run's loss replaced by the lowest of its rates' losses.

    python results/lr_arms_cpu/at_best_rates.py > results/lr_arms_cpu/ninth_at_best_rates.jsonl
    python results/lr_arms_cpu/at_best_rates.py --all_rates > results/lr_arms_cpu/ninth_at_best_of_all_rates.jsonl

A sensitivity check, not a sweep: the best of three rates is a little below what the law's rate would give even
at the right rate (the least of three noisy losses), and the other end runs keep the law's rate. It takes the four
ends checked first (2026-12-07) and the three rates the check was declared with, half, the law's and twice; the fourth rates added later to bracket two optima
(a quarter for d32l2, four times for d104l5) are left out, so that it says what it said when the fits below were
run (d32l2's quarter is 0.0045 lower still: results/lr_arms_cpu/README.md). --all_rates takes the lowest of every
rate each end run was trained at, with the ends checked after those fits (2026-12-08).
"""
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NINTH = os.path.join(HERE, "..", "isoflop_cpu_lr", "results.jsonl")
LOSS_FIELDS = ("final_loss", "final_eval_loss", "final_eval_loss_se", "final_eval_bpb", "final_eval_bpb_se")

DECLARED_MULTIPLES = (0.5, 1.0, 2.0)  # of the rate the ninth sweep's law gave the run
FIRST_ENDS = ("d32l2_C1e13", "d104l5_C1e13", "d136l6_C3e13", "d152l7_C6e13")  # checked 2026-12-07
ALL_RATES = "--all_rates" in sys.argv[1:]


def rate(row):
    return row["config"]["lr_schedule.peak_lr"]


ninth = [json.loads(line) for line in open(NINTH)]
law_rate = {row["run"]: rate(row) for row in ninth}
best = {}
for path in sorted(glob.glob(os.path.join(HERE, "*", "results.jsonl"))):
    rows = [json.loads(line) for line in open(path)]
    name = rows[0]["run"].rsplit("_peak_lr", 1)[0]
    if not ALL_RATES and name not in FIRST_ENDS:
        continue
    # the runs' rates are rounded to three digits, so half of 0.00485 is 0.00243
    declared = [row for row in rows if ALL_RATES
                or any(abs(rate(row) / law_rate[name] / m - 1) < 0.01 for m in DECLARED_MULTIPLES)]
    best[name] = min(declared, key=lambda row: row["final_eval_loss"])

for row in ninth:
    lowest = best.get(row["run"])
    if lowest is not None:
        row.update({key: lowest[key] for key in LOSS_FIELDS}, config=lowest["config"])
    print(json.dumps(row))
