"""Bad input: one line on stderr naming the problem, exit status 2, nothing overwritten.

Inputs rejected before training are checked in-process (fast); the workdir
check needs a finished run and goes through a subprocess.
"""
import json
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
    ("TaskSuite.tasks = ('no_such_task',)", ["TaskSuite.tasks", "no_such_task"]),
    ("TaskSuite.items = 1", ["TaskSuite.items"]),
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


# Every entry point, in-process: (command, its arguments, words the one line must hold). "{tmp}" is
# the test's empty directory, "{file}" a file in it that must survive, "{corpus}" the tiny corpus's
# bindings as flags. Each case must exit 2 with one line and leave {tmp} exactly as it was.
TRAIN = ["--gin_file=base.gin", "--workdir={tmp}/run", "{corpus}", "--gin.TrainConfig.train_steps=2"]
SWEEP_ARGS = ["--gin_file=sweeps/tiny.gin", "--workdir={tmp}/sweep", "--dry_run", "{corpus}"]
CASES = [
    ("train.main", [], ["--workdir"]),
    ("train.main", ["--gin_file=base.gin"], ["--workdir"]),
    ("train.main", ["--workdir={tmp}/run"], ["--gin_file"]),
    ("train.main", [*TRAIN, "--bogus"], ["--bogus"]),
    ("train.main", [*TRAIN, "--stop_after_steps=x"], ["stop_after_steps"]),
    ("train.main", [*TRAIN, "--stop_after_steps=-3"], ["stop_after_steps", "-3"]),
    ("train.main", ["--gin_file=base.gin", "--workdir={file}"], ["is a file"]),
    *[("train.main", [*TRAIN, f"--gin.TrainConfig.{name}={value}"], [name, value.strip("'")])
      for name, value in (("train_steps", "1.5"), ("log_every", "0"), ("checkpoint_every", "0"),
                          ("grad_accum_steps", "0"), ("eval_every", "-1"), ("keep_checkpoints", "0"),
                          ("spike_factor", "-1.0"), ("max_rollbacks", "-1"), ("z_loss", "'big'"))],
    ("train.main", [*TRAIN, "--gin.TrainConfig.grad_accum_steps=3"], ["divisible", "grad_accum_steps"]),
    ("train.main", [*TRAIN, "--gin.DataConfig.seq_len=512"], ["seq_len", "max_len"]),
    ("train.main", [*TRAIN, "--gin.DataConfig.eval_batch_size=-8"], ["eval_batch_size", "-8"]),
    ("train.main", [*TRAIN, "--gin_bindings=TransformerConfig.d_model = (32"], ["bad gin config"]),
    ("train.main", [*TRAIN, "--gin.TransformerConfig.d_model"], ["--gin.TransformerConfig.d_model"]),
    ("train.main", [*TRAIN, "--gin_file=no_such.gin"], ["no_such.gin"]),
    ("train.main", [*TRAIN, "--gin.logical_axis_rules.preset='zero9'"], ["preset", "zero9"]),
    ("train.sweep", [], ["--workdir"]),
    ("train.sweep", ["--workdir={tmp}/sweep"], ["--gin_file"]),
    ("train.sweep", [*SWEEP_ARGS, "--workers", "-3"], ["--workers", "-3"]),
    ("train.sweep", [*SWEEP_ARGS, "--workers=two"], ["--workers"]),
    ("train.sweep", [*SWEEP_ARGS, "--bogus"], ["--bogus"]),
    ("train.sweep", ["--gin_file=no_such_sweep.gin", "--workdir={tmp}/sweep"], ["no_such_sweep.gin"]),
    ("train.sweep", ["--gin_file={unclosed}", "--workdir={tmp}/sweep"], ["bad gin config"]),
    ("train.sweep", ["--gin_file=sweeps/tiny.gin", "--workdir={file}"], ["is a file"]),
    ("train.sweep", [*SWEEP_ARGS, "--gin.Sweep.models=('../escape',)"], ["../escape"]),
    ("train.sweep", [*SWEEP_ARGS, "--gin.Sweep.flops=(-1.0,)"], ["flops"]),
    ("train.sweep", [*SWEEP_ARGS, "--gin.TrainConfig.grad_accum_steps=3"], ["divisible"]),
    ("train.sweep", [*SWEEP_ARGS, "--gin.TrainConfig.log_every=0"], ["log_every"]),
    ("train.sweep", [*SWEEP_ARGS, "--gin.Sweep.rules=[@MinSteps()]", "--gin.MinSteps.min_steps=0"],
     ["MinSteps", "min_steps"]),
    ("scaling.fit", [], ["results"]),
    ("scaling.fit", ["{tmp}/no_such_results.jsonl"], ["no_such_results.jsonl"]),
    ("scaling.fit", ["{file}"], []),
    ("scaling.fit", ["{file}", "--bootstrap=-1"], ["bootstrap"]),
    ("scaling.fit", ["{file}", "--bogus"], ["--bogus"]),
    ("scaling.fit", ["{diverged}"], ["row 2", "run b", "nan"]),
    ("scaling.fit", ["{diverged}", "--min_budget=1e12"], ["budget", "run a has none"]),
    ("scaling.predict", ["{budgeted}", "--flops=1e20", "--min_budget=1e30"], ["1e+30", "largest is 1e+15"]),
    ("scaling.predict", ["{budgeted}", "--flops=1e20", "--min_budget=-1"], ["positive", "-1"]),
    ("train.sweep", [*SWEEP_ARGS, "--gin.Sweep.fit_min_budget=-1.0"], ["fit_min_budget"]),
    ("scaling.design", [], ["results.jsonl or --law"]),
    ("scaling.design", ["{file}"], []),
    ("scaling.design", ["--law=E=2,A=60"], ["--law", "missing", "B"]),
    ("scaling.design", ["--law=E=2,A=x,B=500,alpha=0.38,beta=0.44", "--budgets=1e12,1e13"], ["A", "'x'"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=0.38,beta=0.44", "--budgets=1e12,1e13"], ["--noise"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=0.38,beta=0.44", "--noise=0.01"], ["--budgets"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=0.38,beta=0.44", "--noise=0.01", "--budgets=1e12,lots"], ["--budgets", "lots"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=0.38,beta=0.44", "--noise=0.01", "--budgets=1e12"], ["two positive budgets"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=0.38,beta=0.44", "--noise=0.01", "--budgets=1e12,1e13", "--span=1"], ["span"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=0.38,beta=0.44", "--noise=0.01", "--budgets=1e12,1e13", "--sizes=2"], ["--sizes"]),
    ("scaling.design", ["--law=E=2,A=60,B=500,alpha=-0.38,beta=0.44", "--noise=0.01", "--budgets=1e12,1e13"],
     ["compute-optimal"]),
    ("scaling.compare", [], ["fits"]),
    ("scaling.compare", ["{tmp}/no_such_fits.json"], ["cannot read", "no_such_fits.json"]),
    ("scaling.compare", ["{file}"], ["results.jsonl", "no Chinchilla-accounting IsoFLOP fit"]),
    ("scaling.compare", ["{unclosed}"], ["unclosed.gin", "not JSON"]),
    ("scaling.compare", ["{file}", "{file}"], ["no Chinchilla-accounting IsoFLOP fit"]),
    ("scaling.compare", ["{file}", "--within=0"], ["--within", "positive"]),
    ("data.prepare", ["--bogus"], ["--bogus"]),
    ("data.prepare", ["--gin_bindings=DataConfig.vocab_size = (", "--gin.DataConfig.data_dir='{tmp}/data'"],
     ["bad gin config"]),
    ("data.prepare", ["--gin.DataConfig.no_such_option=1"], ["no_such_option"]),
    ("data.prepare", ["--gin.DataConfig.data_dir='{tmp}/data'", "--gin.build_corpus.sources=('no_such_source',)"],
     ["no_such_source"]),
    ("data.prepare", ["--gin.DataConfig.data_dir='{tmp}/data'", "--gin.NearDedup.threshold=7.0"], ["threshold"]),
    ("data.prepare", ["--gin_file=no_such.gin"], ["no_such.gin"]),
    ("data.clean", ["--sources", "no_such_source"], ["no_such_source"]),
    ("data.clean", ["--workers=-1"], ["--workers"]),
    ("data.clean", ["--validation_percent=200"], ["validation_percent"]),
    ("data.clean", ["--gin_bindings=NearDedup.threshold = ("], ["bad gin config"]),
    ("data.clean", ["--gin.NearDedup.threshold=7.0"], ["threshold"]),
    ("data.clean", ["--bogus"], ["--bogus"]),
]


def snapshot(directory) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
            for p in sorted(directory.rglob("*"))}


def entry_point(name: str):
    import importlib
    module = importlib.import_module({"data.clean": "data.clean.__main__"}.get(name, name))
    return module.main


@pytest.mark.parametrize("command, args, words", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_every_entry_point_refuses_bad_input_in_one_line(command, args, words, tiny_corpus, tmp_path, capfd):
    (tmp_path / "results.jsonl").write_text('{"not": "a results row"}\n')
    (tmp_path / "unclosed.gin").write_text("Sweep.base = ('base.gin',\n")
    row = {"params_total": 2e6, "params_nonembedding": 1e6, "tokens": 1e8, "flops_chinchilla": 1.2e15,
           "flops_kaplan": 6e14, "final_loss": 3.1, "final_eval_loss": 3.0}
    (tmp_path / "diverged.jsonl").write_text(json.dumps({"run": "a", **row}) + "\n" + json.dumps(
        {**row, "run": "b", "final_eval_loss": float("nan")}) + "\n")
    (tmp_path / "budgeted.jsonl").write_text("".join(json.dumps({**row, "run": run, "budget": 1e15}) + "\n"
                                                     for run in ("a", "b")))
    corpus_flags = [f"--gin_bindings={b}" for b in tiny_corpus]
    argv = []
    for arg in args:
        if arg == "{corpus}":
            argv.extend(corpus_flags)
        else:
            argv.append(arg.format(tmp=tmp_path, file=tmp_path / "results.jsonl",
                                   unclosed=tmp_path / "unclosed.gin", diverged=tmp_path / "diverged.jsonl",
                                   budgeted=tmp_path / "budgeted.jsonl"))
    before = snapshot(tmp_path)
    gin.clear_config()
    try:
        code = entry_point(command)(argv)
    finally:
        gin.clear_config()
    out, err = capfd.readouterr()
    assert_one_line_error(subprocess.CompletedProcess(argv, code, out, err), *words)
    assert snapshot(tmp_path) == before  # nothing created, nothing overwritten


@pytest.mark.parametrize("damage, words", [("tokenizer", ["tokenizer", "unreadable"]),
                                           ("shard", ["damaged", "array_record"])])
def test_a_damaged_corpus_is_one_line_and_left_as_it_is(damage, words, main_in_process, tiny_corpus, tmp_path):
    import shutil
    source = tiny_corpus[0].split("=", 1)[1].strip().strip("'")  # DataConfig.data_dir = '...'
    shutil.copytree(source, tmp_path / "data", ignore=shutil.ignore_patterns("warmup"))
    main_in_process(tmp_path / "first", [f"DataConfig.data_dir = '{tmp_path / 'data'}'", *tiny_corpus[1:],
                                         *TINY_MODEL, "TrainConfig.train_steps = 1"])  # records the shards' hashes
    shutil.rmtree(tmp_path / "first")
    corpus_dir = next((tmp_path / "data").rglob("*.array_record*")).parent
    if damage == "tokenizer":
        target = next(corpus_dir.glob("*.model"))
        target.write_bytes(b"not a sentencepiece model" * 100)
    else:
        target = next(corpus_dir.glob("*train.array_record*"))
        data = bytearray(target.read_bytes())
        data[len(data) // 2:len(data) // 2 + 4096] = bytes(4096)
        target.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    result = main_in_process(tmp_path / "run", [f"DataConfig.data_dir = '{tmp_path / 'data'}'", *tiny_corpus[1:],
                                                *TINY_MODEL, "TrainConfig.train_steps = 2"])
    assert_one_line_error(result, *words)
    assert snapshot(tmp_path) == before
