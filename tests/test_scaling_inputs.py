"""Accounting of results rows, input checks, the float64 context, and the plots."""
import json

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from scaling import arrays_from_rows, fit_envelope, fit_isoflop, fit_kaplan, load_results
from scaling.bootstrap import bootstrap_counts, percentile_intervals

ROW = {"params_nonembedding": 1e6, "params_total": 3e6, "tokens": 2e8,
       "flops_kaplan": 1.2e15, "flops_chinchilla": 4.1e15, "final_loss": 4.0,
       "final_eval_loss": 4.2}


def test_accounting_picks_parameter_and_flop_conventions():
    kaplan = arrays_from_rows([ROW], "kaplan")
    chinchilla = arrays_from_rows([ROW], "chinchilla")
    assert (kaplan["N"][0], kaplan["C"][0]) == (1e6, 1.2e15)
    assert (chinchilla["N"][0], chinchilla["C"][0]) == (3e6, 4.1e15)
    assert kaplan["D"][0] == chinchilla["D"][0] == 2e8
    assert kaplan["loss"][0] == 4.2  # held-out loss when every row has it
    assert "budget" not in kaplan and "unique_tokens" not in kaplan


def test_a_mixture_of_experts_is_fitted_on_the_parameters_a_token_uses():
    """The planner places D = C / 6 N with N the active count; the fits must read the same N."""
    moe = {**ROW, "params_active": 1.5e6, "params_active_nonembedding": 0.4e6}
    assert arrays_from_rows([moe], "chinchilla")["N"][0] == 1.5e6
    assert arrays_from_rows([moe], "kaplan")["N"][0] == 0.4e6
    assert arrays_from_rows([ROW], "chinchilla")["N"][0] == 3e6  # rows without active counts: dense


@pytest.mark.parametrize("accounting, n_field", [("chinchilla", "params_active"),
                                                  ("kaplan", "params_active_nonembedding")])
def test_an_moe_sweep_is_planned_on_the_parameters_its_fits_read(accounting, n_field):
    """The planner's D for a budget is C / 6 N with the N that arrays_from_rows gives the fits."""
    import gin
    from train import sweep_plan
    plan = sweep_plan.plan_sweep(["sweeps/tiny.gin"], [
        "Sweep.models = ('moe_xs_top2',)", "Sweep.flops = (1e12,)", "Sweep.rules = []",
        f"Sweep.accounting = '{accounting}'", "TransformerConfig.vocab_size = 8192", "DataConfig.vocab_size = 8192",
        "TransformerConfig.max_len = 128", "DataConfig.seq_len = 128"])
    gin.clear_config()
    run, = plan.runs
    counts = sweep_plan.count_params(sweep_plan.run_settings(plan.base, [*plan.bindings, *sweep_plan.as_bindings(
        run.config)]).model)
    gin.clear_config()
    assert counts["params_total"] > counts["params_active"]  # a mixture: not every expert per token
    assert run.params == counts[n_field]
    row = {**counts, "tokens": run.tokens, "flops_kaplan": 6.0 * counts["params_active_nonembedding"] * run.tokens,
           "flops_chinchilla": run.flops, "final_eval_loss": 3.0, "final_loss": 3.0}
    assert arrays_from_rows([row], accounting)["N"][0] == run.params
    assert 0 <= run.tokens - 1e12 / (6 * run.params) < 8 * 128  # rounded up to whole steps of 8 x 128 tokens


def test_train_loss_is_used_only_when_some_row_lacks_eval_loss():
    rows = [ROW, {**ROW, "final_eval_loss": None}]
    assert list(arrays_from_rows(rows, "kaplan")["loss"]) == [4.0, 4.0]


def test_budget_and_unique_tokens_come_through_when_every_row_has_them():
    rows = [{**ROW, "budget": 1e15, "unique_tokens": 1e8}] * 2
    arrays = arrays_from_rows(rows, "chinchilla")
    assert list(arrays["budget"]) == [1e15, 1e15]
    assert list(arrays["unique_tokens"]) == [1e8, 1e8]
    assert "budget" not in arrays_from_rows([rows[0], ROW], "chinchilla")


@pytest.mark.parametrize("row, message", [
    ({**ROW, "tokens": -1.0}, "positive"),
    ({**ROW, "tokens": "many"}, "not a number"),
    ({k: v for k, v in ROW.items() if k != "flops_kaplan"}, "flops_kaplan"),
])
def test_bad_rows_are_named(row, message):
    with pytest.raises(ValueError, match=message):
        arrays_from_rows([ROW, row], "kaplan")


def test_unknown_accounting_is_refused():
    with pytest.raises(ValueError, match="accounting"):
        arrays_from_rows([ROW], "gpt")


def test_load_results_skips_blank_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(ROW) + "\n\n" + json.dumps(ROW) + "\n")
    assert len(load_results(path)) == 2


def test_fits_reject_mismatched_or_nonpositive_arrays():
    with pytest.raises(ValueError, match="loss has 2 values"):
        fit_kaplan(N=[1e6, 1e7, 1e8], loss=[3.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        fit_kaplan(N=[1e6, 1e7, 0.0], loss=[3.0, 2.5, 2.0])
    with pytest.raises(ValueError, match="two budgets"):
        fit_isoflop([1e6] * 6, [1e9] * 6, [3.0] * 6, [1e16] * 6)


def test_envelope_needs_overlapping_curves_of_several_sizes():
    run = {"N": 1e7, "flops": [1e15, 1e16], "loss": [4.0, 3.5]}
    with pytest.raises(ValueError, match="at least 2 runs"):
        fit_envelope([run])
    with pytest.raises(ValueError, match="run 1: flops"):
        fit_envelope([run, {**run, "flops": [1e15, -1.0]}])
    with pytest.raises(ValueError, match="interior optimum"):
        fit_envelope([run, {**run, "N": 2e7}])


def test_fit_objects_serialise_to_json():
    N = np.geomspace(1e6, 1e9, 8)
    runs = [{"N": n, "flops": 6 * n * np.geomspace(1e7, 1e11, 50),
             "loss": 1.8 + 480 / n**0.35 + 2000 / np.geomspace(1e7, 1e11, 50)**0.37} for n in N]
    for fit in (fit_kaplan(N=N, loss=(8.8e13 / N) ** 0.076, bootstrap=5),
                fit_envelope(runs, bootstrap=5)):
        text = json.dumps(fit.to_dict())
        assert fit.law in text and "intervals" in text


def test_float64_stays_local_to_the_fits():
    N = np.repeat([1e6, 2e6, 4e6, 8e6], 3)
    D = np.tile([1e8, 1e9, 1e10], 4)
    fit_kaplan(N=N, D=D, loss=((6.4e13 / N) ** 0.74 + 1.8e13 / D) ** 0.103)
    assert jnp.ones(1).dtype == jnp.float32


def test_bootstrap_counts_keep_group_sizes():
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    counts = bootstrap_counts(len(groups), 50, seed=0, groups=groups)
    for g, size in ((0, 3), (1, 2), (2, 4)):
        assert np.all(counts[:, groups == g].sum(axis=1) == size)


def test_percentile_intervals_skip_failed_replicates():
    reps = [{"a": float(v)} for v in range(101)] + [{"a": None}, {"a": float("nan")}]
    lo, hi = percentile_intervals(reps, level=0.9)["a"]
    assert (lo, hi) == pytest.approx((5.0, 95.0))


def test_plots_draw_headless(tmp_path):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scaling import fit_chinchilla, plots

    rng = np.random.default_rng(0)
    N, D, C, budget = [], [], [], []
    for c in (1e18, 1e19, 1e20):
        for n in 0.12 * (c / 6) ** 0.5 * np.geomspace(0.2, 5, 5):
            N.append(n), D.append(c / (6 * n)), C.append(c), budget.append(c)
    N, D, C = map(np.array, (N, D, C))
    loss = (1.82 + 482 / N**0.348 + 2085 / D**0.366) * np.exp(rng.normal(0, 0.002, len(N)))
    iso = fit_isoflop(N, D, loss, budget)
    chin = fit_chinchilla(N, D, loss, grid=np.array([[6.0, 7.5, 0.6, 0.35, 0.37]]), bootstrap=4)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    plots.loss_vs_params(N, D, loss, fit=chin, ax=axes[0, 0])
    plots.loss_vs_compute(C, loss, fit=chin, ax=axes[0, 1])
    plots.isoflop_curves(iso, N, loss, budget, ax=axes[0, 2])
    grid = np.geomspace(1e7, 1e10, 20)
    plots.fit_with_band(chin, grid, np.full(20, 1e10), ax=axes[1, 0])
    plots.allocation({"Approach 2": iso, "Approach 3": chin}, np.geomspace(1e18, 1e24, 20),
                     axes=axes[1, 1:])
    fig.savefig(tmp_path / "plots.png")
    plt.close(fig)
    assert (tmp_path / "plots.png").stat().st_size > 10_000
    # Two verification runs: each drawn with its predictions, each legend entry once.
    checks = [{"C": c, "measured": m, "predicted": {"Approach 3": (m * 1.01, (m, m * 1.02)), "KM": (m, None)}}
              for c, m in ((4e20, 2.4), (1e21, 2.3))]
    checks[1]["measured_se"] = 0.02  # the second run has seeds: ± their SE
    fig, ax = plt.subplots()
    plots.prediction_check({"Approach 3": chin}, C, loss, minima=iso.minima, verifications=checks, ax=ax)
    labels = ax.get_legend_handles_labels()[1]
    assert labels.count("measured") == 1 and labels.count("Approach 3: predicted before training") == 1, labels
    assert labels.count("measured ± SE over seeds") == 1, labels
    bars = [segment for collection in ax.collections if hasattr(collection, "get_segments")
            for segment in collection.get_segments()
            if len(segment) == 2 and segment[0][0] == segment[1][0] == 1e21]
    assert [sorted(point[1] for point in segment) for segment in bars] == [pytest.approx([2.28, 2.32])]
    measured = [line for line in ax.lines if line.get_marker() == "D"]
    assert sorted(float(line.get_xdata()[0]) for line in measured) == [4e20, 1e21]
    assert ax.get_xlim()[1] >= 2e21  # the axis reaches past the largest verification
    # Each prediction keeps one colour over both runs, a law's its band's, one without a band its own.
    predicted = [line.get_color() for line in ax.lines if line.get_marker() == "o"]  # A3, KM; A3, KM
    assert predicted[0] == predicted[2] != predicted[1] == predicted[3]
    plt.close(fig)
    # The published allocations are the papers' own: Chinchilla at its budget.
    from scaling.plots import published_allocation
    n_opt, d_opt = published_allocation("Hoffmann et al. 2022", 5.76e23)
    assert n_opt == pytest.approx(70e9)
