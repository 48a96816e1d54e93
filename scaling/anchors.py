"""Readers for the published scaling-law data in scaling/reference_data (see its README).

These data sets let tests and notebooks check the fits against results that
someone outside this project obtained.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# Copies of shared/anchors, kept inside the package (see reference_data/README.md).
DEFAULT_DIR = Path(__file__).resolve().parent / "reference_data"

PORIAN_CONFIG = ("dataset", "hparams", "warmup", "decay", "param_count", "loss_split")


def _rows(directory, name):
    path = Path(DEFAULT_DIR if directory is None else directory) / name
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_epoch_chinchilla(directory=None, drop_highest=5):
    """Hoffmann et al.'s runs as extracted by Besiroglu et al. 2024: (N, D, C, loss) arrays.

    D = C / (6 N). Epoch drop the 5 highest-loss rows (outliers of the
    extraction) before fitting, and so does this by default.
    """
    rows = _rows(directory, "epoch_chinchilla_svg_extracted_data.csv")
    N, C, loss = (np.array([float(r[k]) for r in rows])
                  for k in ("Model Size", "Training FLOP", "loss"))
    keep = np.sort(np.argsort(loss, kind="stable")[:len(loss) - drop_highest])
    N, C, loss = N[keep], C[keep], loss[keep]
    return N, C / (6.0 * N), C, loss


def load_porian_isoflops(directory=None):
    """Porian et al. 2024 IsoFLOP points: {configuration tuple: (N, D, budget, loss)}.

    The configuration is the tuple of PORIAN_CONFIG columns.
    """
    groups = {}
    for r in _rows(directory, "porian2024_isoflop_points.csv"):
        groups.setdefault(tuple(r[k] for k in PORIAN_CONFIG), []).append(
            [float(r[k]) for k in ("n", "t", "flops", "loss")])
    return {cfg: tuple(np.array(v).T) for cfg, v in groups.items()}


def load_porian_exponents(directory=None):
    """Porian et al. 2024 published exponents: {configuration tuple: {a_basic, a_weighted}}.

    a_basic is their plain fit; a_weighted their bootstrap-median weighted fit.
    """
    return {tuple(r[k] for k in PORIAN_CONFIG): {
                "a_basic": float(r["a_basic"]),
                "a_weighted": float(r["a_n_exponent_bs_median_weighted"])}
            for r in _rows(directory, "porian2024_fit_summary.csv")}
