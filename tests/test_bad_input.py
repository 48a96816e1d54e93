"""Bad input: one line on stderr naming the problem, exit status 2, nothing overwritten.

Inputs rejected before training are checked in-process (fast); the workdir
check needs a finished run and goes through a subprocess.
"""
import subprocess

import gin
import pytest

from tests.conftest import TINY_MODEL, run_main
from train import main as train_main


@pytest.fixture
def main_in_process(capfd):
    def call(workdir, bindings, gin_file="base.gin"):
        gin.clear_config()
        argv = [f"--gin_file={gin_file}", f"--workdir={workdir}", "--no_progress",
                *[f"--gin_bindings={b}" for b in bindings]]
        code = train_main.main(argv)
        return subprocess.CompletedProcess(argv, code, *capfd.readouterr())
    yield call
    gin.clear_config()


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("binding, words", [
    ("TransformerConfig.no_such_option = 3", ["no_such_option"]),
    ("NoSuchConfigurable.x = 1", ["NoSuchConfigurable"]),
    ("TransformerConfig.d_model = ", ["bad gin config"]),
    ("TransformerConfig.activation = 'tanh'", ["activation", "tanh"]),
    ("TransformerConfig.n_heads = 5", ["n_heads"]),
    ("make_optimizer.name = 'sgd'", ["sgd"]),
    ("make_mesh.mesh_shape = (3, 1)", ["mesh_shape"]),
    ("TrainConfig.train_steps = 0", ["train_steps"]),
    ("DataConfig.mixture = {'no_such_source': 1.0}", ["mixture", "no_such_source"]),
    ("TransformerConfig.architecture = 'encoder_decoder'", ["sentinel"]),
])
def test_bad_binding(main_in_process, tiny_corpus, tmp_path, binding, words):
    result = main_in_process(tmp_path / "run", tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 2", binding])
    assert_one_line_error(result, *words)
    assert not (tmp_path / "run").exists()


def test_missing_gin_file(main_in_process, tmp_path):
    result = main_in_process(tmp_path / "run", [], gin_file="no_such_file.gin")
    assert_one_line_error(result, "no_such_file.gin")


def test_missing_corpus_source(main_in_process, tmp_path):
    result = main_in_process(tmp_path / "run", TINY_MODEL + [
        f"DataConfig.data_dir = '{tmp_path}'", "build_corpus.sources = ('no_such_source',)",
        "TrainConfig.train_steps = 2"])
    assert_one_line_error(result, "no_such_source")


def test_empty_corpus(main_in_process, tmp_path):
    # Sources that are all too small: every document lands in the train split and validation is empty.
    result = main_in_process(tmp_path / "run", TINY_MODEL + [
        f"DataConfig.data_dir = '{tmp_path}'", "build_corpus.sources = ('python_stdlib',)",
        "build_corpus.max_bytes_per_source = 1", "build_corpus.validation_percent = 0.0",
        "TrainConfig.train_steps = 2"])
    assert_one_line_error(result, "corpus", "empty")


def finished_run(tiny_corpus, workdir):
    """A finished run's bindings and its files' bytes."""
    bindings = tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 2"]
    assert run_main(workdir, bindings).returncode == 0
    return bindings, {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}


def test_workdir_with_another_config_is_refused_and_kept(tiny_corpus, tmp_path):
    bindings, before = finished_run(tiny_corpus, tmp_path)
    result = run_main(tmp_path, bindings + ["TransformerConfig.d_ff = 128"])
    assert_one_line_error(result, "different config", "d_ff")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.slow  # a second training subprocess
def test_start_over_moves_the_old_workdir_aside(tiny_corpus, tmp_path):
    bindings, before = finished_run(tiny_corpus, tmp_path)
    moved = run_main(tmp_path, bindings + ["TransformerConfig.d_ff = 128"], extra_args=["--start_over"])
    assert moved.returncode == 0, moved.stderr
    aside = list(tmp_path.parent.glob(tmp_path.name + ".replaced-*"))
    assert len(aside) == 1 and (aside[0] / "config.gin").read_bytes() == before["config.gin"]
