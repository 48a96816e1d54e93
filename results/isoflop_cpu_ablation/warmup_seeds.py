"""d32l2 at 1e12 by warm-up, final learning rate and seed: README's warm-up table and figure.

    python results/isoflop_cpu_ablation/warmup_seeds.py   # writes figures/d32l2_warmup.png
"""
import json
from pathlib import Path

import matplotlib
import numpy as np

from scaling.eval_precision import paired_difference

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
SWEEP_SEEDS = [HERE / "seeds" / f"d32l2_C1e12_seed{s}" for s in range(3)]
W = HERE / "warmup"
GROUPS = {  # (init seed, data seed) per run
    "warm-up 14 steps (the sweep's N/4096), final lr 10%": SWEEP_SEEDS + [W / "d32l2_C1e12_init1_data0",
                                                                      W / "d32l2_C1e12_init0_data1"],
    "warm-up 14 steps, final lr 0": [W / f"d32l2_C1e12_final0_seed{s}" for s in range(3)],
    "warm-up 70 steps (10%), final lr 10%": [W / f"d32l2_C1e12_warmup70_seed{s}" for s in range(3)]
                                            + [W / "d32l2_C1e12_warmup70_init1_data0"],
}


def seeds(run_dir: Path) -> tuple[int, int]:
    config = dict(line.split(" = ", 1) for line in (run_dir / "config.gin").read_text().splitlines() if " = " in line)
    return int(config["TrainConfig.seed"]), int(config["DataConfig.seed"])


def final_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["final_eval_loss"]


def train_curve(run_dir: Path, window: int = 10):
    loss = np.array([json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                     if '"loss"' in line])
    return np.arange(window, len(loss) + 1), np.convolve(loss, np.ones(window) / window, mode="valid")


control = SWEEP_SEEDS[0]
for name, runs in GROUPS.items():
    print(name)
    for run in runs:
        diff, se = paired_difference(str(run), str(control))
        print(f"  init {seeds(run)[0]} data {seeds(run)[1]}: {final_loss(run):.4f}  (against the sweep's "
              f"rules, seeds 0/0: {diff:+.4f} ± {se:.4f})")
    both = [final_loss(r) for r in runs if seeds(r)[0] == seeds(r)[1]]
    print(f"  seeds 0, 1, 2 (init = data): mean {np.mean(both):.4f}, sd {np.std(both, ddof=1):.4f}")

fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
for run, style in [(control, "C0-"), (W / "d32l2_C1e12_init1_data0", "C3-"),
                   (W / "d32l2_C1e12_warmup70_seed0", "C0--"), (W / "d32l2_C1e12_warmup70_init1_data0", "C3--")]:
    warmup = "70" if "warmup70" in run.name else "14"
    ax.plot(*train_curve(run), style, lw=1.2,
            label=f"init seed {seeds(run)[0]}, warm-up {warmup} steps (eval {final_loss(run):.3f})")
ax.set(xlabel="step (data seed 0: the same batches in every run)", ylim=(3.4, 6.0),
       ylabel="training loss (nats/token, running mean of 10 steps)", title="d32l2 at 1e12 FLOPs, 708 steps")
ax.legend(fontsize="small")
out = HERE / "figures" / "d32l2_warmup.png"
fig.savefig(out, dpi=120)
print(f"wrote {out}")
