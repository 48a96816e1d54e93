"""Each batch/ run against the third CPU sweep's run of the same config at 32 rows: README's "Batch size" table.

    python results/isoflop_cpu_ablation/batch_pairs.py
"""
import json
from pathlib import Path

from scaling.eval_precision import paired_difference

HERE = Path(__file__).resolve().parent
SWEEP = HERE.parent / 'isoflop_cpu_warmup'


def summary(run_dir):
    return json.loads((run_dir / 'summary.json').read_text())


print('| run | steps at 32 rows | rows | steps | peak lr | eval loss | against 32 rows (paired) |')
print('|---|---|---|---|---|---|---|')
for run_dir in sorted(p for p in (HERE / 'batch').iterdir() if (p / 'summary.json').is_file()):
    name = run_dir.name.split('_batch')[0]
    config = (run_dir / 'config.gin').read_text()
    rows = next(int(line.split('=')[1]) for line in config.splitlines() if line.startswith('DataConfig.batch_size'))
    lr = next(line.split('=')[1].strip() for line in config.splitlines() if line.startswith('lr_schedule.peak_lr'))
    ours, theirs = summary(run_dir), summary(SWEEP / name)
    difference, se = paired_difference(run_dir, SWEEP / name)
    print(f"| `{run_dir.name}` | {theirs['steps']} | {rows} | {ours['steps']} | {lr} | {ours['final_eval_loss']:.4f} "
          f"| {difference:+.4f} ± {se:.4f} |")
