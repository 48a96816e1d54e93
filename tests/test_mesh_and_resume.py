"""Sharding changes nothing but speed; a restart changes nothing at all."""
import numpy as np
import pytest

from tests.conftest import TINY_MODEL, metrics_rows, run_main, train_losses

STEPS = 6


@pytest.fixture(scope="module")
def one_device_run(tiny_corpus, tmp_path_factory):
    """The workdir of a finished STEPS-step run on one device: the meshes' reference, and the
    run whose files test_run_files_follow_the_design reads."""
    workdir = tmp_path_factory.mktemp("mesh") / "1x1"
    result = run_main(workdir, tiny_corpus + TINY_MODEL + [f"TrainConfig.train_steps = {STEPS}"])
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture(scope="module")
def one_device_losses(one_device_run):
    return train_losses(one_device_run)


# Each mesh is a subprocess that compiles from scratch. The default suite runs FSDP x model, which
# splits parameters over both axes, batches over one and activations over the other; `pytest -m slow`
# runs data x model, pure FSDP, pure data-parallel and the model-heavy mesh.
@pytest.mark.parametrize("mesh, preset", [((4, 2), "fsdp_tensor"),
                                          pytest.param((4, 2), "data_parallel", marks=pytest.mark.slow),
                                          pytest.param((8, 1), "fsdp", marks=pytest.mark.slow),
                                          pytest.param((8, 1), "data_parallel", marks=pytest.mark.slow),
                                          pytest.param((2, 4), "data_parallel", marks=pytest.mark.slow)])
def test_meshes_give_the_same_losses_as_one_device(tiny_corpus, one_device_losses, tmp_path, mesh, preset):
    bindings = tiny_corpus + TINY_MODEL + [f"TrainConfig.train_steps = {STEPS}", f"make_mesh.mesh_shape = {mesh}",
                                           f"logical_axis_rules.preset = '{preset}'"]
    result = run_main(tmp_path / "run", bindings, devices=8)
    assert result.returncode == 0, result.stderr
    losses = train_losses(tmp_path / "run")
    assert len(losses) == STEPS
    np.testing.assert_allclose(losses, one_device_losses, rtol=1e-5)
    assert losses[-1] < losses[0]


def test_restart_resumes_exactly(tiny_corpus, tmp_path):
    k = 4
    bindings = tiny_corpus + TINY_MODEL + [f"TrainConfig.train_steps = {2 * k}",
                                           f"TrainConfig.checkpoint_every = {k}"]
    straight = run_main(tmp_path / "straight", bindings)
    assert straight.returncode == 0, straight.stderr
    first = run_main(tmp_path / "resumed", bindings, extra_args=["--stop_after_steps", str(k)])
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "resumed" / "summary.json").exists()  # an interrupted run has no summary
    second = run_main(tmp_path / "resumed", bindings)
    assert second.returncode == 0, second.stderr
    resumed = train_losses(tmp_path / "resumed")
    assert len(resumed) == 2 * k  # no step logged twice
    assert resumed == train_losses(tmp_path / "straight")
    evals = [row["eval_loss"] for row in metrics_rows(tmp_path / "resumed") if "eval_loss" in row]
    straight_evals = [row["eval_loss"] for row in metrics_rows(tmp_path / "straight") if "eval_loss" in row]
    assert evals == straight_evals


def test_run_files_follow_the_design(one_device_run):
    import json
    tmp_path = one_device_run
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("params_total", "params_embedding", "params_nonembedding", "params_active", "tokens",
                "flops_kaplan", "flops_chinchilla", "final_loss", "final_eval_loss", "final_eval_bpb", "wall_s",
                "mfu", "steps"):
        assert summary[key] is not None, key
    assert summary["params_total"] == summary["params_embedding"] + summary["params_nonembedding"]
    assert summary["tokens"] == STEPS * 8 * 32
    assert summary["flops_kaplan"] == 6 * summary["params_nonembedding"] * summary["tokens"]
    assert summary["flops_chinchilla"] > summary["flops_kaplan"]
    (source, epochs), = summary["source_epochs"].items()  # the tiny corpus has one source
    assert 0 < epochs < 1  # a few steps read a fraction of it
    rows = metrics_rows(tmp_path)
    train_rows = [r for r in rows if "loss" in r]
    for key in ("step", "tokens", "loss", "lr", "grad_norm", "step_time_s", "tokens_per_s", "mfu"):
        assert key in train_rows[-1], key
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    assert any("eval_bpb" in r for r in rows)
    assert (tmp_path / "config.gin").read_text().count("TransformerConfig.d_model = 32") == 1
    assert list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "checkpoints" / str(STEPS)).is_dir()
