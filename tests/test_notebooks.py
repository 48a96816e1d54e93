"""Every notebook under notebooks/ runs headless, top to bottom, on the tiny sweep's results.

The sweep is the session's `swept` fixture (conftest.py): 2 models x 2 budgets, 4 runs,
too few for some fits, so this also checks that those are skipped with a note rather
than failing the notebook.
"""
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
FIGURE_CELLS = 5  # scaling_laws.ipynb: one figure per plotting cell


@pytest.fixture(scope="module")
def executed(swept, plan):
    """A function: notebook path -> that notebook executed on the tiny sweep (each at most once)."""
    results = swept["workdir"] / "results.jsonl"
    assert swept["second"].returncode == 0, swept["second"].stderr
    assert len(results.read_text().splitlines()) == len(plan.runs)
    env = dict(os.environ, RESULTS=str(results), BOOTSTRAP="16", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("MPLBACKEND", None)  # the kernel's inline backend is what puts figures in the outputs
    cache = {}

    def execute(path):
        if path not in cache:
            nb = nbformat.read(path, as_version=4)
            NotebookClient(nb, kernel_name="python3", timeout=300,
                           resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
            cache[path] = nb
        return cache[path]
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
        # Four runs are enough for the KM laws: their exponents (with bootstrap intervals, unless a
        # resample of so few runs broke down) and their allocation, where the exponents give one ...
        assert re.search(rf"{accounting} accounting\s+KM\s+a = {number}{interval}\s+b = {number}{interval}"
                         rf".*alpha_N = {number}{interval}\s+alpha_D = {number}", text), text
        assert re.search(rf"{accounting} accounting\s+KM\s+at C = \S+: N_opt = \S+, D_opt = ", text) or \
            f"KM ({accounting}): no compute-optimal allocation" in text, text
        # ... but not for Approaches 1-3, which are skipped with a note.
        assert f"skipped Approach 3 ({accounting}): need at least 6 points to fit, got 4" in text
        assert f"skipped Approach 2 ({accounting}): need at least 6 points" in text
        assert f"skipped Approach 1 ({accounting}): " in text
