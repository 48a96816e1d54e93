"""Where numbers go: metrics.jsonl, TensorBoard, the progress bar; the peak FLOP/s for MFU.

(The standard error of eval loss over documents lives in scaling/eval_precision.py, which also
compares two runs scored on the same documents.)

MFU = achieved model FLOP/s (the Chinchilla count of training FLOPs per token,
times tokens per second) / the peak of the devices in use. Accelerator peaks
are the vendors' dense bf16 (or f32) figures by device kind; on CPU there is
no reliable table, so the peak is measured at start-up with a large matrix
product in the run's compute dtype.
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm


# Dense peak FLOP/s per device, from the vendors' data sheets (bf16 without sparsity; f32 where
# the chip has a separate figure). Matched by substring of jax's device_kind, first match wins.
PEAK_FLOPS = (
    ("H200", {"bfloat16": 989e12, "float32": 67e12}),
    ("H100", {"bfloat16": 989e12, "float32": 67e12}),
    ("A100", {"bfloat16": 312e12, "float32": 19.5e12}),
    ("L4", {"bfloat16": 121e12, "float32": 30e12}),
    ("TPU v6", {"bfloat16": 918e12}),
    ("TPU v5p", {"bfloat16": 459e12}),
    ("TPU v5 lite", {"bfloat16": 197e12}),
    ("TPU v5e", {"bfloat16": 197e12}),
    ("TPU v4", {"bfloat16": 275e12}),
    ("TPU v3", {"bfloat16": 123e12}),
)


def measure_matmul_flops(dtype: str = "float32", size: int = 2048, repeats: int = 10) -> float:
    """Achieved FLOP/s of one device on a square matrix product: the CPU's practical peak."""
    x = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def peak_flops_per_device(dtype: str) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number came from)."""
    device = jax.devices()[0]
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            peak = peaks.get(dtype, peaks["bfloat16"])
            return peak, f"table: {name} {dtype}"
    if device.platform == "cpu":
        # All simulated CPU devices share the same cores, so one device's measurement is the host's.
        return measure_matmul_flops(dtype) / jax.device_count(), "measured: CPU matmul"
    raise ValueError(f"no peak FLOP/s known for device kind {device.device_kind!r}; add it to PEAK_FLOPS")


class MetricsWriter:
    """Appends rows to metrics.jsonl and mirrors scalars to TensorBoard (process 0 only)."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        from tensorboardX import SummaryWriter  # imported late: it is slow and only process 0 needs it
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {k: (float(v) if isinstance(v, (np.floating, np.integer, jax.Array)) else v) for k, v in row.items()}
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        self._jsonl.write(json.dumps(row, allow_nan=False) + "\n")
        self._jsonl.flush()
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def progress_bar(total_steps: int, initial: int, enabled: bool = True) -> tqdm:
    return tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True,
                disable=not enabled or jax.process_index() != 0,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
