"""Where numbers go: metrics.jsonl, TensorBoard, the progress bar; the peak FLOP/s for MFU.

(The standard error of eval loss over documents lives in scaling/eval_precision.py, which also
compares two runs scored on the same documents.)

MFU = achieved model FLOP/s (model/accounting.py's "model" count: the matrix products that
execute, the attention term included, the embedding lookup not; PaLM's and MaxText's MFU) / the
peak of the devices in use. The Chinchilla count (`flops_chinchilla`) is for the scaling fits only.
Accelerator peaks are the vendors' dense bf16 (or f32) figures by device kind. On CPU there is no
table: the peak is a matrix product's rate (the median of several repeats, at the best of several
sizes), measured at every start-up, and the best of this machine's measurements (per CPU, dtype
and device count) is kept in a cache and used; or it is pinned in gin
(`peak_flops_per_device.pinned`). An MFU above 1 means every measurement so far was made under
load: it is flagged, never reported as a fact.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time

import gin
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


def measure_matmul_flops(dtype: str = "float32", sizes: tuple = (1024, 2048), repeats: int = 5) -> float:
    """One device's achieved FLOP/s on square matrix products: per size the median of `repeats`
    timings, and the best size's. A median, unlike a minimum time, is not set by one lucky repeat."""
    rates = []
    for size in sizes:
        x = jnp.ones((size, size), dtype)
        matmul = jax.jit(lambda a: a @ a)
        matmul(x).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(x).block_until_ready()
            times.append(time.perf_counter() - start)
        rates.append(2 * size ** 3 / float(np.median(times)))
    return max(rates)


PEAK_CACHE = os.environ.get("SCALINGLM_PEAK_CACHE",
                            os.path.join(os.path.expanduser("~"), ".cache", "scalinglm", "peak_flops.json"))


def _cpu_key(dtype: str) -> str:
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{platform.node()}|{model}|{os.cpu_count()} cores|{jax.device_count()} devices|{dtype}"


@gin.configurable
def peak_flops_per_device(dtype: str, pinned: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number came from). pinned: use this figure."""
    if pinned:
        return pinned, "pinned in gin"
    device = jax.devices()[0]
    for name, peaks in PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            peak = peaks.get(dtype, peaks["bfloat16"])
            return peak, f"table: {name} {dtype}"
    if device.platform != "cpu":
        raise ValueError(f"no peak FLOP/s known for device kind {device.device_kind!r}; add it to PEAK_FLOPS, or "
                         f"set peak_flops_per_device.pinned")
    # Measured at every start-up, and the best measurement of this machine kept: a peak measured
    # while another process held a core reads low, and one such reading must not stick.
    # All simulated CPU devices share the same cores, so one device's share is the host's / devices.
    measured = measure_matmul_flops(dtype) / jax.device_count()
    key, cache = _cpu_key(dtype), {}
    try:
        with open(PEAK_CACHE) as f:
            cache = json.load(f)
    except (OSError, json.JSONDecodeError):  # none yet, or unreadable: start again
        pass
    entry = cache.get(key, {"flops": 0.0, "measurements": 0, "since": time.strftime("%Y-%m-%d")})
    entry = {**entry, "flops": max(entry["flops"], measured), "measurements": entry["measurements"] + 1}
    cache[key] = entry
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(PEAK_CACHE), exist_ok=True)
        partial = f"{PEAK_CACHE}.{os.getpid()}"
        with open(partial, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(partial, PEAK_CACHE)  # whole or not at all, with runs starting side by side
    return entry["flops"], (f"measured: CPU matmul, the best of {entry['measurements']} start-ups since "
                            f"{entry['since']} (this one {measured / 1e9:.1f} G; {PEAK_CACHE})")


def mfu_note(mfu) -> str | None:
    """Why an MFU cannot be taken at its word, or None."""
    if mfu is not None and mfu > 1:
        return (f"above 100% ({mfu:.0%}): the CPU peak was only ever measured under load; rerun on a quiet "
                f"machine, or set peak_flops_per_device.pinned")
    return None


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
