"""Multi-process training through jax.distributed on localhost: two processes with 4 CPU devices
each train as one process with 8 devices does.

Each process packs only its own rows of every batch, process 0 builds the corpus and tokenizer
while the other waits, only process 0 writes metrics, summaries and TensorBoard, and orbax
checkpoints from both (a 2-process run stopped and resumed gives the uninterrupted losses).
The trainings are slow (three of them, ~1 min alone on 2 cores); the rest runs by default.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, TINY_MODEL, main_command, main_env, metrics_rows, run_main, train_losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _processes(commands: list[list[str]], devices: int) -> list[subprocess.CompletedProcess]:
    """Runs one command per process of a jax.distributed job on localhost, all at once."""
    port = _free_port()
    running = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(main_env(devices), JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                         JAX_NUM_PROCESSES=str(len(commands)), JAX_PROCESS_ID=str(i)))
               for i, command in enumerate(commands)]
    try:
        outputs = [process.communicate(timeout=600) for process in running]
    finally:
        for process in running:
            process.kill()
    return [subprocess.CompletedProcess(c, p.returncode, *o) for c, p, o in zip(commands, running, outputs)]


def _printed(result) -> list[str]:
    """stdout's lines, less the gloo library's connection messages."""
    return [line for line in result.stdout.splitlines() if not line.startswith("[Gloo]")]


def _train_two_processes(workdir, bindings, extra_args=()):
    results = _processes([main_command(workdir, bindings, extra_args)] * 2, devices=4)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """A 2-process run on a corpus that does not exist yet (process 0 builds it), stopped at step 6
    and resumed, and the same run in one process with 8 devices on the corpus it built."""
    from data import sources
    root = tmp_path_factory.mktemp("multiprocess")
    source = "python_docs" if sources.available(["python_docs"])[0] else "python_stdlib"
    bindings = [f"DataConfig.data_dir = '{root / 'data'}'", f"build_corpus.sources = ('{source}',)",
                "build_corpus.max_bytes_per_source = 200000", "build_corpus.validation_percent = 10.0",
                *TINY_MODEL, "TrainConfig.train_steps = 12", "TrainConfig.checkpoint_every = 4"]
    first = _train_two_processes(root / "two", bindings, ["--stop_after_steps=6"])
    resumed = _train_two_processes(root / "two", bindings)
    one = run_main(root / "one", bindings, devices=8)
    assert one.returncode == 0, one.stderr
    return root, first, resumed


@pytest.mark.slow
def test_two_processes_train_as_one_with_all_devices(two_process_run):
    root, _, _ = two_process_run
    two, one = root / "two", root / "one"
    steps = [row["step"] for row in metrics_rows(two) if "loss" in row]
    assert steps == list(range(1, 13)), "each step's row once: only process 0 writes metrics.jsonl"
    assert train_losses(two) == pytest.approx(train_losses(one), rel=1e-5, abs=1e-6)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (two, one)]
    assert summaries[0]["devices"] == summaries[1]["devices"] == 8
    assert summaries[0]["final_eval_loss"] == pytest.approx(summaries[1]["final_eval_loss"], rel=1e-5)
    assert summaries[0]["source_epochs"] == pytest.approx(summaries[1]["source_epochs"])
    assert len(list((two / "tensorboard").iterdir())) == 2, "one events file per start of process 0, none of process 1"


@pytest.mark.slow
def test_only_process_zero_reports(two_process_run):
    _, _, resumed = two_process_run
    assert any(line.startswith("final eval loss") for line in _printed(resumed[0]))
    assert _printed(resumed[1]) == []


def test_the_other_processes_wait_for_process_zero_to_build(tmp_path):
    """on_process_zero_first: process 1's build starts only once process 0's has ended."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from train import partitioning
        partitioning.maybe_initialize_distributed()
        import jax
        log = {str(tmp_path / 'log')!r}
        def build():
            with open(log, "a") as f:
                f.write(f"start {{jax.process_index()}}\\n")
            time.sleep(1.0 if jax.process_index() == 0 else 0.0)
            with open(log, "a") as f:
                f.write(f"end {{jax.process_index()}}\\n")
            return jax.process_index()
        print(partitioning.on_process_zero_first(build))
    """)
    results = _processes([[sys.executable, "-c", script]] * 2, devices=1)
    assert [r.returncode for r in results] == [0, 0], results[1].stderr[-2000:]
    assert [_printed(r) for r in results] == [["0"], ["1"]]
    assert (tmp_path / "log").read_text().split("\n")[:-1] == ["start 0", "end 0", "start 1", "end 1"]


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, tiny_corpus):
    bindings = [*tiny_corpus, *TINY_MODEL, "TrainConfig.train_steps = 2", "make_mesh.mesh_shape = (1, 8)"]
    results = _processes([main_command(tmp_path / "run", bindings)] * 2, devices=4)
    for result in results:
        assert result.returncode == 2
        assert "must be multiples of 2" in result.stderr.strip().splitlines()[-1]
    assert not os.path.exists(tmp_path / "run" / "config.gin")
