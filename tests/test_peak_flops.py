"""The CPU peak behind MFU: measured at every start-up, the best measurement kept, or pinned in gin."""
import json

import gin
import pytest

from train import metrics


def test_the_best_measurement_of_the_machine_is_kept_so_that_one_taken_under_load_does_not_stick(
        tmp_path, monkeypatch):
    cache = tmp_path / "peak.json"
    monkeypatch.setattr(metrics, "PEAK_CACHE", str(cache))
    readings = iter([100e9, 40e9, 250e9, 90e9])  # a quiet start, one under load, a quieter one, load again
    monkeypatch.setattr(metrics, "measure_matmul_flops", lambda dtype: next(readings))
    peaks = [metrics.peak_flops_per_device("float32") for _ in range(4)]
    assert [peak for peak, _ in peaks] == [100e9, 100e9, 250e9, 250e9]
    assert "the best of 4 start-ups" in peaks[-1][1] and "this one 90.0 G" in peaks[-1][1]
    entry, = json.loads(cache.read_text()).values()
    assert entry["measurements"] == 4 and entry["flops"] == 250e9
    cache.write_text("{ torn")  # a cache cut short is measured afresh, not a crash
    monkeypatch.setattr(metrics, "measure_matmul_flops", lambda dtype: 120e9)
    assert metrics.peak_flops_per_device("float32")[0] == 120e9


def test_a_pinned_peak_is_used_as_it_is():
    gin.clear_config()
    gin.parse_config("peak_flops_per_device.pinned = 3.5e11")
    try:
        assert metrics.peak_flops_per_device("float32") == (3.5e11, "pinned in gin")
    finally:
        gin.clear_config()


@pytest.mark.parametrize("mfu, flagged", [(None, False), (0.42, False), (1.0, False), (1.19, True)])
def test_an_mfu_above_one_is_flagged_as_a_disturbed_measurement(mfu, flagged):
    note = metrics.mfu_note(mfu)
    assert (note is not None) == flagged
    if flagged:
        assert "119%" in note and "under load" in note
