"""Differences between runs scored on the same eval documents, and their paired standard errors."""
import json
import math

import numpy as np
import pytest

from scaling import eval_precision
from scaling.eval_precision import (EvalDocuments, effective_documents, load_eval_documents,
                                    neighbour_differences, paired_difference)


def heterogeneous_documents(seed: int, docs: int = 200):
    """Document ids, token counts from 1 to ~1000 and per-token losses that differ by about a nat."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10_000, docs, replace=False))
    weight = np.round(rng.lognormal(4, 1.2, docs)).clip(1, None)
    per_token = 3.0 + rng.normal(0, 1.0, docs)
    return rng, ids, weight, per_token


def save_run(tmp_path, name, ids, nll, weight, step=7):
    run_dir = tmp_path / name
    run_dir.mkdir()
    EvalDocuments(np.asarray(ids), np.asarray(nll, float), np.asarray(weight, float)).save(run_dir, step=step)
    return run_dir


def two_correlated_runs(tmp_path, seed=0):
    """Two runs on one document set: b's per-document loss is a's, shifted and with its own noise."""
    rng, ids, weight, per_token = heterogeneous_documents(seed)
    nll_a = weight * (per_token + rng.normal(0, 0.05, len(ids)))
    nll_b = weight * (per_token - 0.1 + 0.1 * (per_token - 3) + rng.normal(0, 0.05, len(ids)))
    return (save_run(tmp_path, "a", ids, nll_a, weight), save_run(tmp_path, "b", ids, nll_b, weight),
            nll_a, nll_b, weight)


def test_paired_se_is_the_delta_method_variance_of_the_difference(tmp_path):
    run_a, run_b, y_a, y_b, w = two_correlated_runs(tmp_path)
    difference, se = paired_difference(run_a, run_b)
    assert difference == pytest.approx(y_a.sum() / w.sum() - y_b.sum() / w.sum(), rel=1e-12)
    # g(ȳa, ȳb, w̄) = (ȳa - ȳb) / w̄, gradient (1/w̄, -1/w̄, -g/w̄); Var ≈ ∇gᵀ Σ ∇g / n with Σ the
    # per-document sample covariance of (y_a, y_b, w).
    n, g = len(w), difference
    gradient = np.array([1, -1, -g]) / w.mean()
    expected = math.sqrt(gradient @ np.cov(np.stack([y_a, y_b, w])) @ gradient / n)
    assert se == pytest.approx(expected, rel=1e-10)


def test_paired_se_agrees_with_a_bootstrap_over_documents(tmp_path):
    run_a, run_b, y_a, y_b, w = two_correlated_runs(tmp_path, seed=1)
    _, se = paired_difference(run_a, run_b)
    counts = np.random.default_rng(2).multinomial(len(w), np.full(len(w), 1 / len(w)), size=4000)
    resampled = (counts @ y_a - counts @ y_b) / (counts @ w)
    # The bootstrap's own error is ~1/sqrt(2 * 4000) ≈ 1.1%; its n-1 vs n and the ratio's curvature, < 1%.
    assert resampled.std() == pytest.approx(se, rel=0.05)


def test_a_constant_offset_per_token_is_known_exactly(tmp_path):
    _, ids, weight, per_token = heterogeneous_documents(3)
    offset = 0.25
    run_a = save_run(tmp_path, "a", ids, weight * per_token, weight)
    run_b = save_run(tmp_path, "b", ids, weight * (per_token - offset), weight)
    difference, se = paired_difference(run_a, run_b)
    se_a, se_b = load_eval_documents(run_a).loss_se, load_eval_documents(run_b).loss_se
    assert se_a > 0.05 and se_b > 0.05  # which documents are in the split: a large error on each run
    assert se_a == pytest.approx(se_b, rel=1e-9)
    assert difference == pytest.approx(offset, abs=1e-12)
    assert se < 1e-9 * se_a  # but none on their difference


def test_effective_documents_is_the_inverse_concentration_of_the_variance():
    rng = np.random.default_rng(11)
    for n in (2, 17, 500):
        signs = rng.choice([-1.0, 1.0], n)
        assert effective_documents(0.3 * signs) == pytest.approx(n, rel=1e-12)  # equal shares
    z = rng.standard_t(2, 400)  # heavy tails, as documents of very different length and kind give
    shares = z ** 2 / np.sum(z ** 2)
    expected = 1 / np.sum(shares ** 2)  # the inverse Herfindahl index of the variance shares
    assert effective_documents(z) == pytest.approx(expected, rel=1e-10)
    assert effective_documents(rng.permutation(z) * 1e-3) == pytest.approx(expected, rel=1e-10)
    assert 1 < effective_documents(np.r_[z, 1e3]) < 1.01  # one document carrying it all
    assert math.isnan(effective_documents(np.zeros(5)))


def test_a_planted_heavy_document_is_named_and_lowers_n_eff(tmp_path):
    rng, ids, weight, per_token = heterogeneous_documents(12)
    shift = rng.normal(0, 0.02, len(ids))  # b: a's losses, a little better and noisy per document
    rows = [{"run": "a", "budget": 1.0, "params_total": 1}, {"run": "b", "budget": 1.0, "params_total": 2}]
    save_run(tmp_path, "a", ids, weight * per_token, weight)
    save_run(tmp_path, "b", ids, weight * (per_token - 0.1 + shift), weight)
    plain, = neighbour_differences(rows, tmp_path)["pairs"]
    planted = int(np.argsort(weight)[-5])  # a long document, not the longest
    shift[planted] = 1.0  # b a nat per token worse there, as on a table one size has learnt and the other not
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    order = rng.permutation(len(ids))  # stored in another order: documents are matched by id
    save_run(heavy, "a", ids[order], (weight * per_token)[order], weight[order])
    save_run(heavy, "b", ids[order], (weight * (per_token - 0.1 + shift))[order], weight[order])
    pair, = neighbour_differences(rows, heavy)["pairs"]
    assert pair["heaviest_documents"][0] == ids[planted]
    assert pair["effective_documents"] < plain["effective_documents"] / 3
    y_a, y_b = weight * per_token, weight * (per_token - 0.1 + shift)
    z = (y_a - weight * y_a.sum() / weight.sum()) - (y_b - weight * y_b.sum() / weight.sum())  # scale drops out
    assert pair["effective_documents"] == pytest.approx(np.sum(z ** 2) ** 2 / np.sum(z ** 4), rel=1e-9)


def test_runs_scored_on_other_documents_are_refused(tmp_path):
    _, ids, weight, per_token = heterogeneous_documents(4)
    run_a = save_run(tmp_path, "run_a", ids, weight * per_token, weight)
    other_ids = ids.copy()
    other_ids[:3] += 20_000
    run_b = save_run(tmp_path, "run_b", other_ids, weight * per_token, weight)
    with pytest.raises(ValueError, match=r"run_a.* and .*run_b.*not scored on the same eval documents.*3 only"):
        paired_difference(run_a, run_b)
    run_c = save_run(tmp_path, "run_c", ids[:-1], (weight * per_token)[:-1], weight[:-1])
    with pytest.raises(ValueError, match="not scored on the same eval documents"):
        paired_difference(run_a, run_c)
    other_weight = weight.copy()
    other_weight[5] += 1
    run_d = save_run(tmp_path, "run_d", ids, weight * per_token, other_weight)
    with pytest.raises(ValueError, match=r"run_a.* and .*run_d.* weigh 1 of their 200 eval documents differently"):
        paired_difference(run_a, run_d)


def test_documents_are_matched_by_id_not_by_position(tmp_path):
    _, ids, weight, per_token = heterogeneous_documents(5)
    run_a = save_run(tmp_path, "a", ids, weight * per_token, weight)
    shuffled = np.random.default_rng(6).permutation(len(ids))
    run_b = tmp_path / "b"
    run_b.mkdir()
    (run_b / "eval_documents.json").write_text(json.dumps(
        {"step": 1, "doc": ids[shuffled].tolist(), "nll": (weight * (per_token + 0.5))[shuffled].tolist(),
         "weight": weight[shuffled].tolist()}))
    difference, se = paired_difference(run_a, run_b)
    assert difference == pytest.approx(-0.5, abs=1e-12) and se < 1e-9


@pytest.mark.parametrize("content, problem", [
    ("{", "unreadable"), ('{"doc": [1], "nll": [1.0]}', "doc, nll and weight"),
    ('{"doc": [1, 2], "nll": [1.0], "weight": [1, 1]}', "one length"),
    ('{"doc": [1, 1], "nll": [1.0, 2.0], "weight": [1, 1]}', "appears twice"),
])
def test_malformed_files_are_named(tmp_path, content, problem):
    (tmp_path / "eval_documents.json").write_text(content)
    with pytest.raises(ValueError, match=f"eval_documents.json: .*{problem}"):
        load_eval_documents(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_eval_documents(tmp_path / "elsewhere")


def test_neighbours_are_consecutive_sizes_within_each_group(tmp_path):
    _, ids, weight, per_token = heterogeneous_documents(7)
    rows = []
    for budget, sizes in ((1e12, (300, 100, 200)), (1e11, (100, 200))):
        for size in sizes:
            name = f"n{size}_C{budget:g}"
            save_run(tmp_path, name, ids, weight * (per_token + 1000 / size + budget / 1e12), weight)
            rows.append({"run": name, "budget": budget, "params_total": size})
    (tmp_path / "unfinished").mkdir()
    rows += [{"run": "unfinished", "budget": 1e12, "params_total": 150},
             {"run": "gone", "budget": 1e12, "params_total": 250}]
    result = neighbour_differences(rows, tmp_path)
    pairs = [(p["group"], p["run_a"], p["run_b"]) for p in result["pairs"]]
    assert pairs == [(1e11, "n100_C1e+11", "n200_C1e+11"), (1e12, "n100_C1e+12", "n200_C1e+12"),
                     (1e12, "n200_C1e+12", "n300_C1e+12")]
    first = result["pairs"][0]
    assert (first["N_a"], first["N_b"]) == (100, 200)
    assert first["difference"] == pytest.approx(1000 / 100 - 1000 / 200, abs=1e-9)
    assert first["se_difference"] < 1e-9 < first["se_a"]
    assert {s["run"]: s["reason"].split()[1] for s in result["skipped"]} == {
        "unfinished": "eval_documents.json", "gone": "run"}


def test_a_finished_run_writes_the_sums_of_its_final_eval(swept, plan):
    # The tiny sweep's real runs (the session's `swept` fixture, conftest.py).
    for run in plan.runs:
        run_dir = swept["workdir"] / run.name
        text = (run_dir / "eval_documents.json").read_text()
        assert text.count("\n") == 1 and ", " not in text  # compact: one line, no indentation
        assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
        record = json.loads(text)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert record["step"] == summary["steps"]
        doc, y, w = (np.array(record[key]) for key in ("doc", "nll", "weight"))
        assert (np.diff(doc) > 0).all() and len(doc) == summary["eval_documents"]
        assert w.sum() == summary["eval_tokens"] and all(isinstance(x, int) for x in record["weight"])
        assert y.sum() / w.sum() == pytest.approx(summary["final_eval_loss"], rel=1e-12)
        assert np.sum(record["bytes"]) / math.log(2) > 0
        assert y.sum() / math.log(2) / np.sum(record["bytes"]) == pytest.approx(summary["final_eval_bpb"], rel=1e-12)
        n, ratio = len(doc), y.sum() / w.sum()
        se = math.sqrt(n / (n - 1) * np.sum((y - ratio * w) ** 2)) / w.sum()
        assert se == pytest.approx(summary["final_eval_loss_se"], rel=1e-9)


def test_cli_prints_neighbouring_differences(swept, plan, tmp_path, capsys):
    workdir = swept["workdir"]
    rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    budget = rows[0]["budget"]
    pair = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["params_total"])
    assert len(pair) == 2
    # A results file beside the runs, with a row whose run never ran.
    results = workdir / "pairs_results.jsonl"
    results.write_text("".join(json.dumps(row) + "\n" for row in
                               [*pair, {"run": "never_ran", "budget": budget, "params_total": 1}]))
    assert eval_precision.main([str(results)]) == 0
    out = capsys.readouterr().out.splitlines()
    difference, se = paired_difference(workdir / pair[0]["run"], workdir / pair[1]["run"])
    line, = [line for line in out if line.lstrip().startswith(pair[0]["run"])]
    fields = line.split()
    assert fields[1] == pair[1]["run"] and float(fields[4]) == pytest.approx(difference, abs=1e-4)
    assert float(fields[5]) == pytest.approx(se, abs=1e-5)
    assert float(fields[7]) == pytest.approx(pair[0]["final_eval_loss_se"], abs=1e-4)
    assert float(fields[9]) == pytest.approx(neighbour_differences(pair, workdir)["pairs"][0]["effective_documents"],
                                             abs=0.06)
    assert out[0] == f"budget {budget:.3g}"
    assert any(line.startswith("skipped never_ran: no run directory") for line in out)
    assert out[-2].startswith("summary: 1 neighbouring pairs in 1 groups") and "median paired SE" in out[-2]
    assert out[-1].startswith("documents behind the paired SEs: median n_eff")


@pytest.mark.parametrize("content", [None, "not json\n", ""])
def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys, content):
    results = tmp_path / "results.jsonl"
    if content is not None:
        results.write_text(content)
    assert eval_precision.main([str(results)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and captured.err.startswith("error: ")


def test_cli_without_documents_is_bad_input(tmp_path, capsys):
    (tmp_path / "old_run").mkdir()
    (tmp_path / "results.jsonl").write_text(json.dumps({"run": "old_run", "budget": 1.0, "params_total": 5}) + "\n")
    assert eval_precision.main([str(tmp_path / "results.jsonl")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no budget has two runs with eval_documents.json" in err


def test_runs_can_be_ordered_by_a_binding_of_their_config(tmp_path, capsys):
    """A learning-rate check orders one size's runs by config.lr_schedule.peak_lr, not by their names."""
    _, ids, weight, per_token = heterogeneous_documents(11)
    rows = []
    for name, rate in (("z_low", 0.003), ("a_mid", 0.006), ("m_high", 0.012)):
        save_run(tmp_path, name, ids, weight * (per_token + 10 * abs(math.log(rate / 0.006))), weight)
        rows.append({"run": name, "budget": 6e13, "params_total": 988200, "config": {"lr_schedule.peak_lr": rate}})
    save_run(tmp_path, "no_rate", ids, weight * per_token, weight)
    rows.append({"run": "no_rate", "budget": 6e13, "params_total": 988200, "config": {}})
    result = neighbour_differences(rows, tmp_path, size_key="config.lr_schedule.peak_lr")
    assert [(p["run_a"], p["run_b"]) for p in result["pairs"]] == [("z_low", "a_mid"), ("a_mid", "m_high")]
    assert [(p["N_a"], p["N_b"]) for p in result["pairs"]] == [(0.003, 0.006), (0.006, 0.012)]
    assert result["pairs"][0]["difference"] == pytest.approx(10 * math.log(2), abs=1e-9)
    assert result["skipped"] == [{"run": "no_rate", "reason": "no config.lr_schedule.peak_lr"}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert eval_precision.main([str(tmp_path / "results.jsonl"), "--size_key", "config.lr_schedule.peak_lr"]) == 0
    printed = capsys.readouterr().out
    assert "peak_lr a" in printed and "0.003" in printed and "+6.9315" in printed
