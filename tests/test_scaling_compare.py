"""scaling.compare: sweeps side by side, checked against the runner's own verification reports and
against figures computed here from the fits files."""
import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

from scaling import compare

ROOT = Path(__file__).resolve().parents[1]
REPORTED = ("isoflop_cpu_3e13", "isoflop_cpu_6e13", "isoflop_cpu_depth", "isoflop_cpu_clean", "isoflop_cpu_lr")  # sweeps with the runner's verification.txt
LAWS = {"chinchilla": "chinchilla", "kaplan": "kaplan", "isoflop trend": "isoflop"}


def _prediction(rng):
    """A prediction.json entry as train.sweep writes one: L(N, D) of Approach 3 and KM, Approach 2's trend."""
    def law():
        loss = rng.uniform(2.0, 3.5)
        return {"loss": loss, "interval": sorted(loss * rng.uniform(0.95, 1.05, size=2))}
    return {"predicted_loss": {"chinchilla": law(), "kaplan": law()}, "predict": {"isoflop": law()}}


def _rows(rng):
    """Fitted runs, and verification runs at two budgets with 1-3 seeds each, one of them unfinished."""
    rows = [{"run": f"d{i}_C1e12", "budget": 1e12, "params_total": 1000 * (i + 1), "final_eval_loss": 3.0}
            for i in range(4)]
    expected = {}
    for budget in (4e13, 1e14):
        prediction, seeds = _prediction(rng), int(rng.integers(1, 4))
        losses = list(rng.uniform(2.0, 3.5, size=seeds))
        rows += [{"run": f"v_C{budget:g}" + (f"_seed{s}" if s else ""), "budget": budget, "params_total": 5000,
                  "role": "verification", "prediction": prediction, "final_eval_loss": loss}
                 for s, loss in enumerate(losses)]
        expected[budget] = (statistics.fmean(losses), prediction, losses)
    rows.append({"run": "v_C1e+14_seed9", "budget": 1e14, "role": "verification",
                 "prediction": expected[1e14][1], "final_eval_loss": None})  # still training
    return rows, expected


@pytest.mark.parametrize("seed", range(5))
def test_verifications_average_the_seeds_and_score_every_law_in_any_row_order(seed):
    rng = np.random.default_rng(seed)
    rows, expected = _rows(rng)
    entries = compare.verifications(rows)
    assert [e["budget"] for e in entries] == sorted(expected)
    for entry in entries:
        measured, prediction, losses = expected[entry["budget"]]
        assert entry["measured"] == pytest.approx(measured, rel=1e-12)
        if len(losses) == 1:
            assert entry["seed_se"] is None
        else:  # the sample standard deviation over √n, from the statistics module
            assert entry["seed_se"] == pytest.approx(statistics.stdev(losses) / len(losses) ** 0.5, rel=1e-12)
        targets = {**prediction["predicted_loss"], "isoflop": prediction["predict"]["isoflop"]}
        assert set(entry["laws"]) == set(targets)
        for law, target in targets.items():
            got = entry["laws"][law]
            assert got["error"] == pytest.approx(measured / target["loss"] - 1, rel=1e-12)
            assert got["inside"] == (target["interval"][0] <= measured <= target["interval"][1])
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    assert compare.verifications(shuffled) == entries


@pytest.mark.parametrize("sweep", REPORTED)
def test_errors_match_the_runners_own_verification_report(sweep):
    """train.sweep printed verification.txt when the run finished; compare recomputes it from the rows."""
    report = (ROOT / "results" / sweep / "verification.txt").read_text()
    printed = {LAWS[m[1]]: (float(m[2]), float(m[3]) / 100)
               for m in re.finditer(r"^  (chinchilla|kaplan|isoflop trend) predicted ([\d.]+) .*relative error "
                                    r"([+-][\d.]+)%( ± [\d.]+%)?$", report, re.M)}
    measured = re.search(r"measured eval loss ([\d.]+)( ± ([\d.]+))?", report)
    summary = compare.summarise(ROOT / "results" / sweep / "fits.json")
    (entry,) = summary["verifications"]
    assert entry["measured"] == pytest.approx(float(measured[1]), abs=5e-5)
    if measured[3]:  # reports written since the runner prints the seeds' SE
        assert entry["seed_se"] == pytest.approx(float(measured[3]), abs=5e-5)
    assert set(entry["laws"]) == set(printed) and len(printed) == 3
    for law, (predicted, error) in printed.items():
        assert entry["laws"][law]["predicted"] == pytest.approx(predicted, abs=5e-5)
        assert entry["laws"][law]["error"] == pytest.approx(error, abs=5e-5)


def test_checks_turn_on_the_thresholds():
    """Each check flips where its figure, read from the fits file here, crosses the threshold."""
    path = ROOT / "results" / "isoflop_cpu_depth" / "fits_from_1e12.json"
    fits = json.loads(path.read_text())
    chinchilla = fits["fits"]["chinchilla"]
    a2, (lo2, hi2) = chinchilla["isoflop"]["estimates"]["a"], chinchilla["isoflop"]["intervals"]["a"]
    a3, (lo3, hi3) = chinchilla["chinchilla"]["estimates"]["a"], chinchilla["chinchilla"]["intervals"]["a"]
    reach3 = max(a3 - lo3, hi3 - a3)
    summary = compare.summarise(path)

    def verdicts(**thresholds):
        merged = {"agree": 0.05, "half_width": 0.1, "within": 0.01, **thresholds}
        return {name: met for name, met, _ in compare.checks(summary, **merged)}

    assert verdicts(agree=abs(a2 - a3) * 1.01)["Approaches 2 and 3 within " + f"{abs(a2 - a3) * 1.01:g}"]
    assert not verdicts(agree=abs(a2 - a3) * 0.99)["Approaches 2 and 3 within " + f"{abs(a2 - a3) * 0.99:g}"]
    wide, narrow = reach3 * 1.01, reach3 * 0.99
    assert verdicts(half_width=wide)[f"Approach 3's interval within ±{wide:g}"]
    assert not verdicts(half_width=narrow)[f"Approach 3's interval within ±{narrow:g}"]
    assert verdicts()["Approach 2's interval within ±0.1"] == (max(a2 - lo2, hi2 - a2) <= 0.1)
    assert verdicts()["Kaplan gap above 0"] == (fits["accounting_gap"]["interval"][0] > 0)
    km = summary["verifications"][0]["laws"]["kaplan"]["error"]  # +1.87%: met at 2%, not at 1%
    key = "verification at C=2.4e14, KM: within {:.0%} and inside"
    assert verdicts(within=0.02)[key.format(0.02)] and not verdicts()[key.format(0.01)]
    assert 0.01 < km < 0.02
    assert verdicts()["every budget bracketed"]


@pytest.mark.parametrize("fits, budgets, count", [("fits_from_1e12.json", (1e12, 6e13), 20),
                                                  ("interim/fits_1e12_to_3e13.json", (1e12, 3e13), 16)])
def test_eval_se_is_the_median_over_the_pairs_of_the_fitted_budgets(fits, budgets, count):
    """The committed eval_precision.txt lists every pair of the sweep; a fits file's budgets select some.
    The interim fit was made before 6e13 trained, and its results.jsonl now holds 6e13 too."""
    sweep = ROOT / "results" / "isoflop_cpu_depth"
    budget, paired = None, []
    for line in (sweep / "eval_precision.txt").read_text().splitlines():
        if line.startswith("budget "):
            budget = float(line.split()[1])
        elif budget is not None and budgets[0] <= budget <= budgets[1] and re.match(r"\s+d\w+_C", line):
            paired.append(float(line.split()[5]))
    assert len(paired) == count
    summary = compare.summarise(sweep / fits, eval_se=True)
    assert summary["paired_se"] == pytest.approx(statistics.median(paired), abs=1e-5)


def test_cli_prints_one_markdown_row_per_verification_and_bolds_what_is_met(tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows, expected = _rows(rng)
    fits = json.loads((ROOT / "results" / "isoflop_cpu_depth" / "fits_from_1e12.json").read_text())
    fits["results"] = str(tmp_path / "results.jsonl")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fits.json").write_text(json.dumps(fits))
    assert compare.main([str(tmp_path / "fits.json"), "--markdown", "--within=0.5"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + len(expected)
    bold = sum(cell.count("**") // 2 for cell in table[2:])
    met = sum(abs(law["error"]) <= 0.5 and law["inside"]
              for entry in compare.verifications(rows) for law in entry["laws"].values())
    assert bold == met
    assert compare.main([str(tmp_path / "fits.json")]) == 0
    text = capsys.readouterr().out
    assert text.count("predicted") == 3 * len(expected) and "measured" in text
