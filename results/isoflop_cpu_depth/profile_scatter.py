"""How far each budget's runs sit from their own IsoFLOP parabola, in this sweep and in the sixth.

The sixth sweep's ladder mixed depths at one budget (d88l2, d96l4, d160l3, d144l8 at 6e13), and from 3e13 its
best run, a four-layer model between shallower neighbours, sat 1-1.6% below its budget's parabola. This
sweep's ladder makes depth a step function of N. If depth was what moved runs off their profiles, the runs
here should sit closer to their parabolas. Per budget and sweep: the parabola's vertex (Chinchilla
accounting, all parameters; the same parabola scaling.fit's Approach 2 uses), the best run against it, and the
RMS of the runs' residuals from it, in % of the loss. A parabola through 5 runs has 2 degrees of freedom,
so one budget's RMS is itself uncertain by about half.

    python results/isoflop_cpu_depth/profile_scatter.py > results/isoflop_cpu_depth/profile_scatter.txt
"""
from pathlib import Path

import numpy as np

from scaling.inputs import arrays_from_rows, load_results
from scaling.isoflop import budget_profile

RESULTS = Path(__file__).parent.parent
SWEEPS = {"sixth": RESULTS / "isoflop_cpu_6e13" / "results.jsonl", "seventh": RESULTS / "isoflop_cpu_depth" / "results.jsonl"}


def scatter(results_path):
    """{budget: (runs, vertex N, best run's shape, best - vertex in %, RMS residual in %)} of one sweep."""
    arrays = arrays_from_rows([r for r in load_results(results_path) if "final_eval_loss" in r])
    rows = [r for r in load_results(results_path) if "final_eval_loss" in r and r.get("role") != "verification"]
    out = {}
    for budget in np.unique(arrays["budget"]):
        at = arrays["budget"] == budget
        n, loss = arrays["N"][at], arrays["loss"][at]
        profile = budget_profile(n, arrays["D"][at], loss, budget)
        if not profile.interior:
            out[budget] = (int(at.sum()), None, None, None, None)
            continue
        c2, c1, c0 = profile.parabola
        fitted = c2 * np.log(n) ** 2 + c1 * np.log(n) + c0
        residual = 100 * (loss - fitted) / fitted
        best = int(np.argmin(loss))
        shape = [r["model"] for r in rows if r["budget"] == budget and r["params_total"] == n[best]][0]
        out[budget] = (int(at.sum()), profile.n_opt, shape, 100 * (loss[best] / profile.loss_opt - 1),
                       float(np.sqrt(np.mean(residual ** 2))))
    return out


def main():
    tables = {name: scatter(path) for name, path in SWEEPS.items()}
    budgets = sorted(set().union(*tables.values()))
    print(f"{'budget':>7}  " + "  ".join(f"{name + ': runs, N_opt, best run, best - vertex, RMS':<58}" for name in tables))
    for budget in budgets:
        cells = []
        for table in tables.values():
            if budget not in table:
                cells.append(f"{'not trained':<58}")
                continue
            runs, n_opt, shape, gap, rms = table[budget]
            cells.append(f"{runs} runs, no interior vertex{'':<31}" if n_opt is None else
                         f"{runs} runs, {n_opt:9.3g}, {shape:>7}, {gap:+6.2f}%, {rms:5.2f}%{'':<14}")
        print(f"{budget:7.0e}  " + "  ".join(cells))
    for name, table in tables.items():
        rms = [v[4] for b, v in table.items() if v[4] is not None and b >= 1e13]
        print(f"{name}: median RMS from 1e13 up {np.median(rms):.2f}% over {len(rms)} budgets" if rms else
              f"{name}: no budget from 1e13 up")


if __name__ == "__main__":
    main()
