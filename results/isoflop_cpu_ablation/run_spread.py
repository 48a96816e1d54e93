"""The run-to-run spread of the repeated runs in this folder, pooled: README's table and its 0.038.

    python results/isoflop_cpu_ablation/run_spread.py
"""
import json
from pathlib import Path

import numpy as np

from scaling.eval_precision import paired_difference

A = str(Path(__file__).resolve().parent) + '/'
groups = {
    'd32l2 at 1e12': [A + f'seeds/d32l2_C1e12_seed{s}' for s in range(3)],
    'd48l3 at 3e12': [A + f'seeds/d48l3_C3e12_seed{s}' for s in range(3)],
    'd64l4 at 1e13': [A + 'd64l4_C1e13_control', *(A + f'seeds/d64l4_C1e13_seed{s}' for s in (1, 2))],
    'd88l4 at 3e13': [A + 'd88l4_C3e13_control', A + 'd88l4_C3e13_seed1'],
}
ss = dof = 0
for name, dirs in groups.items():
    losses = np.array([json.load(open(d + '/summary.json'))['final_eval_loss'] for d in dirs])
    ss += np.sum((losses - losses.mean()) ** 2); dof += len(losses) - 1
    diffs = [paired_difference(dirs[i], dirs[0]) for i in range(1, len(dirs))]
    print(f"{name}: {', '.join(f'{x:.4f}' for x in losses)}; sd {losses.std(ddof=1):.4f}; "
          f"against seed 0: {', '.join(f'{d:+.4f} ± {se:.4f}' for d, se in diffs)}")
print(f"pooled sd {np.sqrt(ss / dof):.4f} on {dof} dof")
