"""Per end run: the parabola in log rate through its three rates, its optimum against the law's rate and the loss there.

    python results/lr_arms_cpu/rate_parabolas.py results/lr_arms_cpu > results/lr_arms_cpu/rate_parabolas.txt
"""
import glob, json, sys
import numpy as np
for f in sorted(glob.glob(sys.argv[1] + '/*/results.jsonl')):
    rows = sorted((json.loads(l) for l in open(f)), key=lambda r: r['config']['lr_schedule.peak_lr'])
    if len(rows) < 3: continue
    x = np.log([r['config']['lr_schedule.peak_lr'] for r in rows]); y = np.array([r['final_eval_loss'] for r in rows])
    c2, c1, c0 = np.polyfit(x, y, 2); xv = -c1 / (2 * c2)
    law = rows[1]
    print(f.split('/')[-2], 'N', law['params_total'], 'D/N %.1f' % (law['tokens'] / law['params_total']), 'law %.4g' % law['config']['lr_schedule.peak_lr'],
          'vertex %.4g (%.2fx the law)' % (np.exp(xv), np.exp(xv) / law['config']['lr_schedule.peak_lr']), 'loss there %.4f, %.4f below the law' % (np.polyval([c2, c1, c0], xv), y[1] - np.polyval([c2, c1, c0], xv)))
