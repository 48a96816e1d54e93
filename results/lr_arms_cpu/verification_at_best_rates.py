"""Would the ends' best rates have moved the ninth sweep's verification? Its prediction refitted with them.

    python results/lr_arms_cpu/verification_at_best_rates.py > results/lr_arms_cpu/verification_at_best_rates.txt
    python results/lr_arms_cpu/verification_at_best_rates.py results/lr_arms_cpu/ninth_at_best_of_all_rates.jsonl \
        > results/lr_arms_cpu/verification_at_best_of_all_rates.txt

Fits Approach 3 and KM from 1e13 up, as the ninth sweep's prediction was (Sweep.fit_min_budget, 200 resamples),
once on the ninth's runs and once with its checked end runs at the best of their three declared rates
(ninth_at_best_rates.jsonl, or the file named on the command line), and gives each law's predicted loss at the verification run's N and D against the
mean of its two seeds. A sensitivity check after the fact: the ninth's verification is judged against the
prediction committed before it trained (../isoflop_cpu_lr/prediction.json), not against this.
"""
import os
import sys

from scaling.compare import verifications
from scaling.inputs import budget_window, fit_rows, load_results
from scaling.predict import predicted_loss

HERE = os.path.dirname(os.path.abspath(__file__))
NINTH = os.path.join(HERE, "..", "isoflop_cpu_lr", "results.jsonl")
AT_BEST = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "ninth_at_best_rates.jsonl")
NAMES = {"chinchilla": "Approach 3", "kaplan": "KM"}

(verification,) = verifications(load_results(NINTH))
N, D, measured = verification["N"], verification["D"], verification["measured"]
print(f"verification {', '.join(verification['runs'])}: N {N:,}, D {D:,}, measured {measured:.4f} "
      f"(the mean of its seeds)")
for label, path in (("the ninth's runs", NINTH), ("the ends at their best rates", AT_BEST)):
    rows = fit_rows(budget_window(load_results(path), 1e13))
    print(f"{label} ({len(rows)} runs from 1e13):")
    for law, entry in predicted_loss(rows, N, D, bootstrap=200).items():
        low, high = entry["interval"]
        print(f"  {NAMES[law]:<10} predicted {entry['loss']:.4f} [{low:.4f}, {high:.4f}]: "
              f"measured - predicted {(measured - entry['loss']) / entry['loss']:+.2%}")
