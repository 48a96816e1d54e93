"""Each bracketed optimum against the ninth sweep's rate law and against the law through all of them.

    python results/lr_length_cpu/law_residuals.py > results/lr_length_cpu/law_residuals.txt

The ninth's law is applied as the ninth sweep applied it (held at 104,688 parameters' rate below that size); the
law through all of them is `lr_fit_all.json` (scaling.learning_rate over every optimum, lr_fit_all.txt), applied
without a floor, since its smallest size, 22,608 parameters, is the sweeps' smallest.
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = json.load(open(os.path.join(HERE, "lr_fit_all.json")))


def ninth(n, d):
    return 0.0104 * (max(n, 104688) / 3.48e5) ** -0.556 * (d / 5.14e6) ** -0.0925


def refitted(n, d):
    return (ALL["value"] * (n / ALL["reference_params"]) ** ALL["exponent"]
            * (d / ALL["reference_tokens"]) ** ALL["token_exponent"])


print(f"{'N':>10} {'D / N':>7} {'optimum':>9}  {'/ ninth law':>11}  {'/ refitted':>10}")
ratios = {"ninth": [], "refitted": []}
for size in ALL["sizes"]:
    if size["optimal_rate"] is None:
        continue
    n, d, best = size["N"], size["D"], size["optimal_rate"]
    ratios["ninth"].append(best / ninth(n, d))
    ratios["refitted"].append(best / refitted(n, d))
    print(f"{n:>10,.0f} {d / n:>7.1f} {best:>9.4g}  {ratios['ninth'][-1]:>11.2f}  {ratios['refitted'][-1]:>10.2f}")
for name, r in ratios.items():
    log = np.log(r)
    print(f"{name}: optimum / law {np.exp(log.min()):.2f}-{np.exp(log.max()):.2f}, "
          f"RMS of ln(optimum / law) {np.sqrt(np.mean(log ** 2)):.2f} over {len(r)} optima")
