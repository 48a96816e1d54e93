"""Every notebook under notebooks/ runs headless, top to bottom, on two sweeps' results.

- The tiny sweep, the session's `swept` fixture (conftest.py): 2 models x 2 budgets, 4 real
  runs, too few for some fits, so this also checks that those are skipped with a note
  rather than failing the notebook.
- An adaptive IsoFLOP sweep's results written here from a known Chinchilla law: budgets
  with a size added by bracketing, and a verification run beyond the largest budget whose
  prediction the notebook compares with its measurement.
"""
import json
import os
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
FIGURE_CELLS = 6  # scaling_laws.ipynb: one figure per plotting cell, and the design check's where Approach 3 fits
LAW = dict(E=1.8, A=400.0, B=2000.0, alpha=0.35, beta=0.35)  # a = 0.5


def law_loss(N, D):
    return LAW["E"] + LAW["A"] / N ** LAW["alpha"] + LAW["B"] / D ** LAW["beta"]


def adaptive_rows():
    """results.jsonl rows of an adaptive IsoFLOP sweep on LAW, with 0.2% noise: 3 budgets of 5
    sizes, one budget with a size added in wave 1, and a verification run at 4x the largest."""
    rng = np.random.default_rng(0)
    rows = []

    def row(name, n, budget, **extra):
        tokens = budget / (6 * n)
        loss = law_loss(n, tokens) * np.exp(rng.normal(0, 0.002))
        return {"run": name, "config": {}, "budget": budget, "params_total": n, "params_nonembedding": 0.7 * n,
                "tokens": tokens, "flops_kaplan": 6 * 0.7 * n * tokens, "flops_chinchilla": 6.6 * n * tokens,
                "final_loss": loss, "final_eval_loss": loss, "final_eval_loss_se": 0.01, **extra}
    for budget in (1e18, 4e18, 1.6e19):
        n_star = 0.1 * (budget / 6) ** 0.5
        sizes = n_star * 2.0 ** np.arange(-2, 3) * (1.7 if budget == 1.6e19 else 1.0)
        rows += [row(f"n{n:.3g}_C{budget:.0e}", n, budget, wave=0) for n in sizes]
        if budget == 1.6e19:  # off-centre: the runner added a smaller size
            rows.append(row(f"n{sizes[0] / 2:.3g}_C{budget:.0e}", sizes[0] / 2, budget, wave=1))
    n_v = 0.1 * (6.4e19 / 6) ** 0.5
    verification = row("verify_C6.4e19", n_v, 6.4e19, role="verification", wave=0)
    truth = law_loss(n_v, 6.4e19 / (6 * n_v))
    verification["prediction"] = {"accounting": "chinchilla", "N": int(n_v), "D": int(6.4e19 / (6 * n_v)),
                                  "predicted_loss": {"chinchilla": {"loss": truth * 1.003,
                                                                    "interval": [truth * 0.99, truth * 1.01]}}}
    return rows + [verification]


@pytest.fixture(scope="module")
def executed(swept, plan, tmp_path_factory):
    """A function: (notebook path, 'tiny' or 'adaptive') -> that notebook executed on that sweep's
    results (each at most once)."""
    results = {"tiny": swept["workdir"] / "results.jsonl",
               "adaptive": tmp_path_factory.mktemp("adaptive") / "results.jsonl"}
    assert swept["second"].returncode == 0, swept["second"].stderr
    assert len(results["tiny"].read_text().splitlines()) == len(plan.runs)
    results["adaptive"].write_text("".join(json.dumps(r) + "\n" for r in adaptive_rows()))
    cache = {}

    def execute(path, sweep="tiny"):
        if (path, sweep) not in cache:
            env = dict(os.environ, RESULTS=str(results[sweep]), BOOTSTRAP="16", JAX_PLATFORMS="cpu",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
            env.pop("MPLBACKEND", None)  # the kernel's inline backend is what puts figures in the outputs
            nb = nbformat.read(path, as_version=4)
            NotebookClient(nb, kernel_name="python3", timeout=300,
                           resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
            cache[path, sweep] = nb
        return cache[path, sweep]
    return execute


def outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == kind]


def images(cell):
    return [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def printed(nb):
    return "".join(o["text"] for cell in nb.cells for o in outputs(cell, "stream") if o["name"] == "stdout")


def test_there_are_notebooks():
    assert REPO / "notebooks" / "scaling_laws.ipynb" in NOTEBOOKS


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert all(not cell.get("outputs") and cell.get("execution_count") is None
                   for cell in nb.cells if cell.cell_type == "code"), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_headless(executed, path):
    nb = executed(path)  # nbclient raises CellExecutionError on the first failing cell
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)
    assert not [o for cell in code for o in outputs(cell, "error")]
    # Every cell that shows a figure shows exactly one.
    for cell in code:
        shows_figure = re.search(r"^save_and_show\(fig", cell.source, re.MULTILINE) is not None
        assert len(images(cell)) == shows_figure, cell.source[:200]


def test_scaling_laws_notebook_on_the_tiny_sweep(executed, swept, plan):
    nb = executed(REPO / "notebooks" / "scaling_laws.ipynb")
    assert sum(len(images(cell)) for cell in nb.cells) == FIGURE_CELLS
    text = printed(nb)
    assert f"{len(plan.runs)} runs from {swept['workdir'] / 'results.jsonl'}" in text
    for run in plan.runs:
        assert run.name in text
    number, interval = r"-?\d+\.\d+", r"( \[-?\d+\.\d+, -?\d+\.\d+\])?"
    for accounting in ("kaplan", "chinchilla"):
        # Four runs are enough for KM's single-variable laws (with bootstrap intervals, unless a
        # resample of so few runs broke down), not for its 4-parameter joint law ...
        assert re.search(rf"{accounting} accounting\s+KM\s+.*alpha_N = {number}{interval}\s+alpha_D = {number}",
                         text), text
        assert f"warning, KM ({accounting}): joint law not fitted: it has 4 parameters and needs at least 5" in text
        # ... but not for Approaches 1-3, which are skipped with a note.
        assert f"skipped Approach 3 ({accounting}): need at least 6 points to fit, got 4" in text
        assert f"skipped Approach 2 ({accounting}): need at least 6 points" in text
        assert f"skipped Approach 1 ({accounting}): " in text
    assert "no design check: it needs Approach 3's law" in text


def test_scaling_laws_notebook_shows_bracketing_and_the_verification(executed):
    nb = executed(REPO / "notebooks" / "scaling_laws.ipynb", "adaptive")
    assert sum(len(images(cell)) for cell in nb.cells) == FIGURE_CELLS + 1
    text = printed(nb)
    assert "17 runs from" in text and "(1 verification run held out of the fits)" in text
    # The runs follow an additive law: the curvature check prints its line for each accounting, and no warning.
    assert text.count("IsoFLOP curvature c2") == 2 and "does not draw these IsoFLOP profiles" not in text, text
    # Approaches 2 and 3 recover the law's a = 0.5 ...
    a3 = re.search(r"chinchilla accounting\s+Approach 3\s+a = (\d+\.\d+)", text)
    a2 = re.search(r"chinchilla accounting\s+Approach 2\s+a = (\d+\.\d+)", text)
    assert a3 and a2 and abs(float(a3.group(1)) - 0.5) < 0.03 and abs(float(a2.group(1)) - 0.5) < 0.05, text
    # ... the per-budget table shows the third budget's second wave ...
    assert re.search(r"1\.6e\+19\s+\S+\s+True\s+\d+\s+\d+\s+\S+\s+2\n", text), text
    # ... and the verification: predicted 0.3% above the truth, inside its interval.
    assert re.search(r"measured \d\.\d{4} \(SE 0\.0100\)\n\s+Approach 3\s+predicted \d\.\d{4} "
                     r"\[\d\.\d{4}, \d\.\d{4}\]: error -0\.\d\d%, inside the interval", text), text
    # The design check: the runs scatter 0.2% about the law, under their eval SE, so the spread simulated at
    # the RMS residual is the narrower, and both hold the law's a.
    noise = {label: float(x) for label, x in re.findall(r"scattered by the (eval SE|RMS residual):\n.*?relative "
                                                          r"noise (\d\.\d+)", text, re.DOTALL)}
    assert 0.001 < noise["RMS residual"] < 0.0025 < noise["eval SE"], noise
    spreads = re.findall(r"Approach 3: a \d\.\d+, 95% of sweeps in \[(\d\.\d+), (\d\.\d+)\]", text)
    assert len(spreads) == 2 and all(float(lo) < 0.5 < float(hi) for lo, hi in spreads), text
    (se_lo, se_hi), (rms_lo, rms_hi) = [(float(lo), float(hi)) for lo, hi in spreads]
    assert rms_hi - rms_lo < se_hi - se_lo
