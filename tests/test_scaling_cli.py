"""python -m scaling.fit: the table, the JSON, and one-line failures on bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.fit import main

REPO = Path(__file__).resolve().parents[1]


def sweep_rows():
    """An IsoFLOP sweep whose losses follow a known Chinchilla law, in results.jsonl's shape.

    Kaplan accounting leaves out a fixed embedding count and counts 6 N D;
    Chinchilla accounting counts all parameters and 10% more FLOPs.
    """
    rng = np.random.default_rng(0)
    rows = []
    for budget in (1e17, 4e17, 1.6e18, 6.4e18):
        n_star = 0.12 * (budget / 6) ** 0.5
        for n in n_star * np.geomspace(1 / 5, 5, 7):
            tokens = budget / (6 * n)
            loss = 1.82 + 482 / n**0.348 + 2085 / tokens**0.366
            rows.append({
                "run": f"c{budget:.0e}_n{n:.0f}", "config": {}, "budget": budget,
                "params_nonembedding": n, "params_total": n + 2e6, "tokens": tokens,
                "flops_kaplan": 6 * n * tokens, "flops_chinchilla": 6.6 * (n + 2e6) * tokens,
                "final_loss": loss, "final_eval_loss": loss * np.exp(rng.normal(0, 0.002)),
                "unique_tokens": 1e12,
            })
    return rows


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    results = write_rows(tmp_path_factory.mktemp("sweep") / "results.jsonl", sweep_rows())
    return results, results.with_name("fits.json")


def test_writes_table_and_json_for_both_accountings(fitted, capsys):
    results, out = fitted
    assert main([str(results), "--bootstrap", "8"]) == 0
    table = capsys.readouterr().out
    for text in ("accounting: kaplan", "accounting: chinchilla", "isoflop:", "chinchilla:",
                 "kaplan:", "alpha", "N_opt", "D_opt", str(out)):
        assert text in table
    # The data repeat nothing (unique_tokens far above tokens), so no data-constrained fit, and
    # there are no run directories with training curves for Approach 1.
    assert "data_constrained: not fitted: no run repeats data" in table
    assert "envelope: not fitted: no training curve at" in table
    fits = json.loads(out.read_text())["fits"]
    assert set(fits) == {"kaplan", "chinchilla"}
    iso = fits["kaplan"]["isoflop"]
    # The sweep follows a law with a = 0.366 / (0.348 + 0.366) = 0.513.
    assert iso["estimates"]["a"] == pytest.approx(0.513, abs=0.03)
    lo, hi = iso["intervals"]["a"]
    assert lo <= iso["estimates"]["a"] <= hi
    assert len(iso["minima"]) == 4
    chin = fits["kaplan"]["chinchilla"]
    assert chin["bootstrap"]["replicates"] == 8
    assert [row["C"] for row in chin["allocation"]][0] == pytest.approx(6.4e18 * 1.0)
    # Runs from the additive law (Kaplan accounting: N as it was drawn): its profiles are the runs' own.
    curvature = fits["kaplan"]["isoflop_curvature"]
    assert len(curvature["budgets"]) == 4 and curvature["warning"] is None and curvature["interval"] is None
    assert abs(np.log(curvature["drift"])) < np.log(1.1)
    assert "IsoFLOP curvature c2" in table and "(no interval: the runs carry no SE)" in table


def test_accounting_choice_changes_the_inputs(fitted, capsys, tmp_path):
    results, _ = fitted
    out = tmp_path / "chinchilla_only.json"
    assert main([str(results), "--accounting", "chinchilla", "--out", str(out)]) == 0
    capsys.readouterr()
    fits = json.loads(out.read_text())["fits"]
    assert list(fits) == ["chinchilla"]
    # Under Chinchilla accounting the budgets' largest compute is the full count.
    top = fits["chinchilla"]["chinchilla"]["allocation"][0]["C"]
    assert top == pytest.approx(max(r["flops_chinchilla"] for r in sweep_rows()))


@pytest.mark.slow  # ~13 s of fitting; the law itself is checked in test_scaling_synthetic.py
def test_data_constrained_fit_when_runs_repeat_data(tmp_path, capsys):
    rows = sweep_rows()
    for r in rows:
        r["unique_tokens"] = r["tokens"] / 2  # two epochs each
    results = write_rows(tmp_path / "results.jsonl", rows)
    assert main([str(results), "--accounting", "kaplan"]) == 0
    table = capsys.readouterr().out
    assert "data_constrained: Chinchilla's law in effective N', D'" in table


@pytest.mark.parametrize("content, problem", [
    (None, "not found"),
    ("", "empty"),
    ('{"run": "a"}\n{not json\n', ":2: malformed JSON"),
    ("[1, 2]\n", "JSON object"),
])
def test_bad_files_fail_with_one_line_and_status_2(tmp_path, capsys, content, problem):
    path = tmp_path / "results.jsonl"
    if content is not None:
        path.write_text(content)
    assert main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0]
    assert not (tmp_path / "fits.json").exists()


def test_too_few_runs_and_missing_fields_fail_cleanly(tmp_path, capsys):
    path = write_rows(tmp_path / "results.jsonl", sweep_rows()[:3])
    assert main([str(path)]) == 2
    assert "need at least 6" in capsys.readouterr().err
    rows = sweep_rows()
    del rows[4]["tokens"]
    write_rows(path, rows)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "row 5" in err and "tokens" in err


def test_command_line_entry_point_reports_bad_input_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    for args in ([str(tmp_path / "missing.jsonl")], [str(tmp_path), "--bootstrap", "many"]):
        proc = subprocess.run([sys.executable, "-m", "scaling.fit", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_both_accountings_report_approach_2s_gap_with_a_paired_interval(fitted, capsys):
    results, out = fitted
    assert main([str(results), "--bootstrap", "8"]) == 0
    assert "accounting gap (Approach 2): a_kaplan - a_chinchilla = " in capsys.readouterr().out
    written = json.loads(out.read_text())
    a = {acc: written["fits"][acc]["isoflop"]["estimates"]["a"] for acc in ("kaplan", "chinchilla")}
    gap = written["accounting_gap"]
    assert gap["gap"] == pytest.approx(a["kaplan"] - a["chinchilla"], abs=1e-9)
    assert gap["interval"][0] <= gap["interval"][1] and gap["replicates"] <= 8


def test_runs_trained_on_different_corpora_are_named_and_one_corpus_is_not(tmp_path, capsys):
    """Rows carry their tokenizer's fingerprint and their corpus's train tokens: one pair of them says
    nothing; two (a sweep continued on a machine whose corpus came out otherwise) warn, in any order of
    the rows, naming how many runs each has. A corpus fingerprint alone differing does not warn: it
    hashes shard bytes, which differ between builds of the same text."""
    rows = sweep_rows()
    for i, row in enumerate(rows):
        row.update(tokenizer_fingerprint="aaaa", corpus_train_tokens=34_540_743, corpus_fingerprint=f"bytes{i % 2}")
    same = write_rows(tmp_path / "same.jsonl", rows)
    assert main([str(same), "--accounting", "chinchilla", "--out", str(tmp_path / "same.json")]) == 0
    assert "different corpora" not in capsys.readouterr().out
    for row in rows[:5]:
        row.update(tokenizer_fingerprint="bbbb", corpus_train_tokens=34_542_351)
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    mixed = write_rows(tmp_path / "mixed.jsonl", shuffled)
    out = tmp_path / "mixed.json"
    assert main([str(mixed), "--accounting", "chinchilla", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    expected = (f"warning: these runs were trained on 2 different corpora: {len(rows) - 5} with tokenizer aaaa "
                f"and 34,540,743 train tokens")
    assert expected in table and "; 5 with tokenizer bbbb and 34,542,351 train tokens" in table, table
    assert json.loads(out.read_text())["warnings"][0] in table


def test_run_sd_reaches_the_lack_of_fit_check_and_bad_values_fail(tmp_path, capsys):
    """The sweep's rows carry an eval SE of 0.002 and scatter by 0.002: a run-to-run spread of 0.05
    leaves chi2/dof far below 1, which the fits' diagnostics report; a negative spread is refused."""
    rows = [{**row, "final_eval_loss_se": 0.002} for row in sweep_rows()]
    path = write_rows(tmp_path / "results.jsonl", rows)
    out = tmp_path / "fits.json"
    assert main([str(path), "--accounting", "chinchilla", "--run_sd", "0.05", "--out", str(out)]) == 0
    capsys.readouterr()
    told = json.loads(out.read_text())["fits"]["chinchilla"]["chinchilla"]["diagnostics"]["lack_of_fit"]
    assert main([str(path), "--accounting", "chinchilla", "--out", str(out)]) == 0
    capsys.readouterr()
    alone = json.loads(out.read_text())["fits"]["chinchilla"]["chinchilla"]["diagnostics"]["lack_of_fit"]
    assert told["chi2"] == pytest.approx(alone["chi2"] * 0.002**2 / (0.002**2 + 0.05**2))
    assert main([str(path), "--run_sd", "-0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--run_sd" in err, err


def test_the_command_says_which_run_to_run_spread_it_counted(tmp_path, capsys):
    rows = sweep_rows()
    twice = rows + [{**row, "run": row["run"] + "_seed1", "config": {"TrainConfig.seed": 1},
                     "final_eval_loss": row["final_eval_loss"] + (0.01 if i % 2 else -0.01)}
                    for i, row in enumerate(rows)]
    out = tmp_path / "fits.json"
    assert main([str(write_rows(tmp_path / "twice.jsonl", twice)), "--accounting", "chinchilla", "--out", str(out)]) == 0
    # Each pair's losses differ by 0.01: a variance of 0.01^2 / 2 on one dof, alike for every pair.
    assert (f"run-to-run spread: {0.01 / np.sqrt(2):.4g} nats, pooled over {len(rows)} configurations trained with "
            f"other seeds ({len(rows)} dof)") in capsys.readouterr().out
    assert json.loads(out.read_text())["run_sd"]["source"] == "replicates"
    assert main([str(write_rows(tmp_path / "once.jsonl", rows)), "--accounting", "chinchilla", "--out", str(out)]) == 0
    assert "run-to-run spread: not measured (no configuration was trained with two seeds)" in capsys.readouterr().out
