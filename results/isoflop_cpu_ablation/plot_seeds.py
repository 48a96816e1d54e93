"""The training curves behind README's seed check: d88l4 at 3e13 three times, and at 1e13.

    python results/isoflop_cpu_ablation/plot_seeds.py   # writes results/isoflop_cpu_ablation/figures/d88l4_runs.png
"""
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = {
    "d88l4 at 3e13, seed 0, the sweep's corpus (eval 2.644)": HERE.parent / "isoflop_cpu_2decades" / "d88l4_C3e13",
    "d88l4 at 3e13, seed 0, this corpus (eval 2.755)": HERE / "d88l4_C3e13_control",
    "d88l4 at 3e13, seed 1, this corpus (eval 2.643)": HERE / "d88l4_C3e13_seed1",
    "d88l4 at 1e13, seed 0, this corpus (eval 3.184)": HERE / "d88l4_C1e13",
}


def curve(run_dir: Path, window: int = 25):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r and "tokens" in r]
    tokens, loss = (np.array([r[k] for r in train], float) for k in ("tokens", "loss"))
    return tokens[window - 1:], np.convolve(loss, np.ones(window) / window, mode="valid")


fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
for label, run_dir in RUNS.items():
    ax.plot(*curve(run_dir), label=label, lw=1.2)
ax.set(xlabel="training tokens", ylabel="training loss (nats/token, running mean of 25 steps)", ylim=(2.4, 3.6))
ax.legend(fontsize="small")
out = HERE / "figures" / "d88l4_runs.png"
fig.savefig(out, dpi=120)
print(f"wrote {out}")
