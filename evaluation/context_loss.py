"""Loss against context: how much a model gains from the tokens it has already read.

Each eval target at position t of its row is predicted from the t tokens before it, so the eval
loss per position is a curve in context length. Kaplan et al. (2020) found that curve falling
as a power law in t, more steeply for larger models; Olsson et al. (2022) call the
loss at a late token minus the loss at an early one (their 500th and 50th) the in-context
learning score, and saw it drop at once when induction heads form.

    python -m evaluation.context_loss --workdir=RUN [--workdir=RUN ...] [--early=8:16] [--late=96:128] \\
        [--repeated_tokens=ROWS] [--every_checkpoint] [--out=FILE.json] [--plot=FILE.png]

scores each run's latest checkpoint on its own eval set (rebuilt as training built it: the
mean over positions is the run's eval loss), and prints per run its eval loss, the loss over
the early and the late window of positions, and the score late - early with its standard
error over eval documents (paired: both windows come from the same rows). --repeated_tokens
scores rows of random pieces, each sequence read twice, instead (Olsson et al.'s test for
induction heads: the second reading minus the first). --every_checkpoint
scores each saved checkpoint, to see when in training a model starts to use its context. --out
keeps every row, with the loss per position; --plot draws the losses against context length, and
the score against the tokens trained when a run has several checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

import cli
from scaling.eval_precision import document_sums, ratio_difference_se


@dataclasses.dataclass(frozen=True)
class ContextLosses:
    """One run's eval set scored per position: weighted nll and weights [rows, positions], and each row's document."""
    nll: np.ndarray
    weight: np.ndarray
    doc: np.ndarray

    @property
    def loss(self) -> float:
        """The eval loss: every weighted target's nll over their count."""
        return float(self.nll.sum() / self.weight.sum())

    def per_position(self) -> np.ndarray:
        """The loss at each position (nan where no row has a weighted target)."""
        weight = self.weight.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 0, self.nll.sum(axis=0) / weight, np.nan)

    def _window_sums(self, window: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        start, stop = window
        _, (nll, weight) = document_sums(self.doc, self.nll[:, start:stop].sum(axis=1),
                                         self.weight[:, start:stop].sum(axis=1))
        return nll, weight

    def window_loss(self, window: tuple[int, int]) -> float:
        nll, weight = self._window_sums(window)
        return float(nll.sum() / weight.sum())

    def score(self, early: tuple[int, int], late: tuple[int, int]) -> tuple[float, float]:
        """(loss over the late window - loss over the early one, its standard error over eval documents)."""
        late_nll, late_weight = self._window_sums(late)
        early_nll, early_weight = self._window_sums(early)
        return (self.window_loss(late) - self.window_loss(early),
                ratio_difference_se(late_nll, late_weight, early_nll, early_weight))


def score_positions(model, params, batches: Sequence[dict]) -> ContextLosses:
    """Every eval batch through the model, keeping the loss of each position."""
    import jax
    import jax.numpy as jnp

    from data.pipeline import model_inputs
    from train.trainer import position_losses
    step = jax.jit(lambda p, b: position_losses(p, b, model=model))
    scored = [step(params, {k: jnp.asarray(v) for k, v in model_inputs(batch).items()}) for batch in batches]
    nll, weight = (np.concatenate([np.asarray(s[i], np.float64) for s in scored]) for i in (0, 1))
    return ContextLosses(nll, weight, np.concatenate([batch["doc"] for batch in batches]))


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of a run's saved checkpoints, oldest first."""
    from train.checkpoints import Checkpointer
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1000)
    try:
        return checkpointer.steps()
    finally:
        checkpointer.close()


def repeated_token_batches(tokenizer, seq_len: int, rows: int, rows_per_batch: int, seed: int = 0) -> list[dict]:
    """Olsson et al.'s induction test: rows of random text pieces, each row one random sequence of
    seq_len // 2 pieces read twice (then the start of a third reading). Nothing predicts a first reading;
    a model that finds the earlier occurrence of the current token and copies what followed it
    predicts the second. Each row counts as its own document; rows are rounded up to whole batches."""
    half = seq_len // 2
    rows = -(-rows // rows_per_batch) * rows_per_batch  # whole batches, which split over the mesh as eval batches do
    pieces = np.flatnonzero(tokenizer.piece_bytes > 0)  # no control or unknown ids
    tokens = np.random.default_rng(seed).choice(pieces, (rows, half))
    text = np.concatenate([tokens, tokens, tokens], axis=1)[:, :seq_len + 1].astype(np.int32)
    batches = []
    for start in range(0, rows, rows_per_batch):
        chunk = text[start:start + rows_per_batch]
        batches.append({"inputs": chunk[:, :-1], "targets": chunk[:, 1:],
                        "weights": np.ones((len(chunk), seq_len), np.float32),
                        "prefix_len": np.zeros(len(chunk), np.int32), "doc": np.arange(start, start + len(chunk))})
    return batches


def reading_windows(seq_len: int) -> dict:
    """The targets of repeated_token_batches' first reading (its first piece has no target) and of its second."""
    half = seq_len // 2
    return {"early": (0, half - 1), "late": (half, 2 * half)}


def score_run(workdir: str, windows: Optional[dict] = None, step: Optional[int] = None,
              repeated_rows: int = 0) -> tuple[ContextLosses, int, dict]:
    """(a run's checkpoint at `step`, default its latest, scored per position; its step; the windows).
    It is scored on the run's eval set, or with repeated_rows on that many rows of repeated random
    pieces, whose two readings are then the windows. windows: {name: (start, stop)}, each checked
    against the run's row length before any scoring."""
    from data import loader
    from evaluation.generate import load_run
    from model.transformer import TransformerConfig
    from train.trainer import held_out_batches
    model, params, tokenizer, step = load_run(workdir, step)
    data_cfg = loader.DataConfig()
    windows = reading_windows(data_cfg.seq_len) if repeated_rows else windows or {}
    for name, (start, stop) in windows.items():
        if stop > data_cfg.seq_len:
            raise cli.InputError(f"--{name}={start}:{stop} ends past {workdir}'s rows of {data_cfg.seq_len} tokens")
    if repeated_rows:
        batches = repeated_token_batches(tokenizer, data_cfg.seq_len, repeated_rows, data_cfg.eval_rows_per_batch)
    else:
        batches = held_out_batches(loader.load(data_cfg), TransformerConfig(), data_cfg)
    return score_positions(model, params, batches), step, windows


def window(text: str) -> tuple[int, int]:
    """'START:STOP', positions START to STOP - 1 of a row."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a window is START:STOP (e.g. 8:16), got {text!r}") from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"a window needs 0 <= START < STOP, got {text!r}")
    return start, stop


def _plot(path: str, results: list[dict], early, late) -> None:
    """Loss against context length, one curve per scored checkpoint; beside it, where a run has several
    checkpoints, their late - early score against the tokens trained."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = sorted({row["run"] for row in results}, key=[row["run"] for row in results].index)
    over_training = any(sum(row["run"] == run for row in results) > 1 for run in runs)
    fig, axes = plt.subplots(1, 2 if over_training else 1, figsize=(15 if over_training else 9, 4.5), squeeze=False)
    ax = axes[0, 0]
    for row in results:
        label = f"{row['run']} step {row['step']}" if over_training else row["run"]
        curve = row["loss_per_position"]
        ax.plot(np.arange(1, len(curve) + 1), curve, label=label)
    for span, label in ((early, "early"), (late, "late")):
        ax.axvspan(span[0] + 1, span[1], alpha=0.12, color="grey")
        ax.text(span[0] + 1, ax.get_ylim()[1], label, va="top", fontsize=8)
    ax.set(xscale="log", xlabel="tokens of context (position + 1)", ylabel="eval loss (nats)",
           title="Loss against context length")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves, not over them
    if over_training:
        ax = axes[0, 1]
        for run in runs:
            rows = [row for row in results if row["run"] == run]
            ax.errorbar([row["tokens"] for row in rows], [row["score"] for row in rows],
                        yerr=[1.96 * row["score_se"] for row in rows], marker="o", capsize=2, label=run)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xscale="log", xlabel="tokens trained", ylabel=f"loss at {late[0]}:{late[1]} - at {early[0]}:{early[1]}",
               title="In-context score over training (95% intervals)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m evaluation.context_loss", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", action="append", required=True, help="a train.main run directory; repeatable")
    parser.add_argument("--early", type=window, help="START:STOP, positions of the early window (default 8:16)")
    parser.add_argument("--late", type=window, help="START:STOP, positions of the late window (default 96:128)")
    parser.add_argument("--repeated_tokens", type=cli.whole_number(1), default=0, metavar="ROWS",
                        help="score ROWS rows (rounded up to whole eval batches) of random pieces read twice "
                             "instead of the eval set; the windows are then the two readings")
    parser.add_argument("--out", help="a JSON file for every run's loss per position")
    parser.add_argument("--plot", help="a figure of the losses against context length")
    parser.add_argument("--every_checkpoint", action="store_true",
                        help="score every saved checkpoint of each run, not only its latest")
    args = parser.parse_args(argv)
    from absl import logging as absl_logging

    from data import loader
    absl_logging.set_verbosity(absl_logging.FATAL)
    if args.repeated_tokens and (args.early or args.late):
        raise cli.InputError("--repeated_tokens scores the second reading against the first: leave out --early "
                             "and --late")
    for path in (args.out, args.plot):  # before the scoring, not after it
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise cli.InputError(f"{path}: its directory does not exist")
    windows = None if args.repeated_tokens else {"early": args.early or (8, 16), "late": args.late or (96, 128)}
    results = []
    print(f"{'run':24s} {'step':>6s} {'loss':>7s} {'early':>7s} {'late':>7s}  late - early (SE)")
    for workdir in args.workdir:
        name = workdir.rstrip("/").split("/")[-1]
        for wanted in checkpoint_steps(workdir) if args.every_checkpoint else [None]:
            scored, step, used = score_run(workdir, windows, wanted, args.repeated_tokens)
            value, se = scored.score(used["early"], used["late"])
            data_cfg = loader.DataConfig()  # the run's: score_run parsed its config.gin
            row = {"run": name, "workdir": workdir, "step": int(step),
                   "tokens": int(step) * data_cfg.batch_size * data_cfg.seq_len, "eval_loss": scored.loss,
                   "early": list(used["early"]), "late": list(used["late"]),
                   "early_loss": scored.window_loss(used["early"]), "late_loss": scored.window_loss(used["late"]),
                   "score": value, "score_se": se, "loss_per_position": scored.per_position().tolist()}
            results.append(row)
            print(f"{name:24s} {step:6d} {row['eval_loss']:7.4f} {row['early_loss']:7.4f} {row['late_loss']:7.4f}  "
                  f"{value:+.4f} ({se:.4f})", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"repeated_tokens": args.repeated_tokens, "runs": results}, f, indent=1)
    if args.plot and results:
        _plot(args.plot, results, results[0]["early"], results[0]["late"])
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from data.corpus import CorpusError
    from train.checkpoints import CheckpointError
    return cli.run(_main, argv, errors=(cli.InputError, ValueError, CorpusError, CheckpointError))


if __name__ == "__main__":
    sys.exit(main())
