"""The verification's prediction, remade for the loss at each window of context positions.

The fifth sweep's laws, fitted on budgets 1e12-3e13, put the 1.2e14 run's eval loss too high (results/README.md, "Where
the bend is"). That loss is the mean over the 128 positions of each eval row, and above 1e13 its part past
32 tokens of context starts to fall faster. If the laws hold for the rest of the loss, then the same fits
made on the loss at short context alone should predict the verification run's short-context loss, and miss
only its long-context part.

This script takes each run's loss per position (context_loss.json, from python -m evaluation.context_loss),
makes every run's loss the mean over one window of positions, refits the window 1e12-3e13 (as fits.json
does) and predicts the verification run's loss over that window with each approach: Approach 2's trend
through the IsoFLOP minima at its own N_opt, Approach 3's and KM's L(N, D) at the run's N and D. Each is set
against both seeds of the verification run (seed 1 from ../isoflop_cpu_ablation/seeds/). It also prints
Approach 3's exponent a and the RMS of its log residuals, how far the form misses the runs it was fitted on.
Last, for each window, the backtest that needs no verification run: the budgets 1e13 and 3e13 each predicted
from the window's budgets below them, against their own parabola's minimum (scaling.predict --backtest).

    python results/isoflop_cpu_3e13/context_predictions.py > results/isoflop_cpu_3e13/context_predictions.txt
"""
import json
from pathlib import Path

import numpy as np

from scaling.inputs import arrays_from_rows, budget_window, fit_rows, load_results
from scaling.predict import backtest, backtest_report, loss_from_fits, predict_from_fits
from scaling.sweep_fits import fit_sweep

HERE = Path(__file__).parent
WINDOWS = [(0, 16), (0, 32), (32, 128), (0, 128)]
MIN_BUDGET, BOOTSTRAP = 1e12, 200
SEED_1 = HERE.parent / "isoflop_cpu_ablation" / "seeds" / "d104l4_C1.2e14_seed1_context.json"


def curves(path):
    return {row["run"]: np.array(row["loss_per_position"]) for row in json.loads(path.read_text())["runs"]}


def at_positions(start, stop):
    """The window's rows, each run's eval loss its mean over positions start:stop."""
    return [{**row, "final_eval_loss": float(per_position[row["run"]][start:stop].mean())} for row in rows]


def relative(measured, predicted, interval):
    where = "" if interval is None else " inside" if interval[0] <= measured <= interval[1] else " outside"
    return f"{100 * (measured - predicted) / predicted:+.2f}%{where}"


per_position = curves(HERE / "context_loss.json")
rows = budget_window(load_results(HERE / "results.jsonl"), MIN_BUDGET)
(verification,) = [row for row in rows if row.get("role") == "verification"]
seed_1 = curves(SEED_1)[verification["run"] + "_seed1"]
print(f"fits on {len(fit_rows(rows))} runs, budgets {MIN_BUDGET:.0e}-3e13, {BOOTSTRAP} bootstrap resamples; "
      f"predicted: {verification['run']} (N {verification['params_total']:,}, D {verification['tokens']:,}) "
      f"and its second seed; error = (measured - predicted) / predicted\n")
for start, stop in WINDOWS:
    windowed = at_positions(start, stop)
    fits = fit_sweep(fit_rows(windowed), "chinchilla", BOOTSTRAP, laws=("chinchilla", "kaplan", "isoflop"))
    trend = predict_from_fits(fits, verification["budget"])["isoflop"]
    at_run = loss_from_fits(fits, verification["params_total"], verification["tokens"])
    targets = {"Approach 2": (trend["loss"], trend["interval"]),
               "Approach 3": (at_run["chinchilla"]["loss"], at_run["chinchilla"]["interval"]),
               "KM": (at_run["kaplan"]["loss"], at_run["kaplan"]["interval"])}
    measured = [float(per_position[verification["run"]][start:stop].mean()), float(seed_1[start:stop].mean())]
    arrays = arrays_from_rows(fit_rows(windowed))
    a3 = fits["chinchilla"]
    residual = np.log(arrays["loss"]) - np.log(a3.predict(arrays["N"], arrays["D"]))
    print(f"positions {start}:{stop}   measured: seed 0 {measured[0]:.4f}, seed 1 {measured[1]:.4f}")
    for name, (loss, interval) in targets.items():
        print(f"  {name:<11} {loss:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]   seed 0 "
              f"{relative(measured[0], loss, interval)}, seed 1 {relative(measured[1], loss, interval)}")
    a2 = fits["isoflop"]
    print(f"  a: Approach 2 {a2.a:.3f} [{a2.intervals['a'][0]:.3f}, {a2.intervals['a'][1]:.3f}], Approach 3 "
          f"{a3.a:.3f} [{a3.intervals['a'][0]:.3f}, {a3.intervals['a'][1]:.3f}]; Approach 3's log residuals: "
          f"RMS {100 * np.sqrt(np.mean(residual ** 2)):.2f}%, largest {100 * np.abs(residual).max():.2f}%\n")

for start, stop in WINDOWS:
    steps = backtest(at_positions(start, stop), "chinchilla", BOOTSTRAP)
    print(f"positions {start}:{stop}, " + backtest_report(steps, "chinchilla", BOOTSTRAP) + "\n")
