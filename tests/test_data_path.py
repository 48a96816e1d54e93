"""Sources, tokenizer and packing: lossless, exactly resumable, honest about bytes."""
import json

import gin
import numpy as np
import pytest

from data import prepare, sources
from data.order import DocumentOrder
from data.pipeline import DECODER_START_ID, PackedBatches, eval_batches
from data.span_corruption import uncorrupt_spans
from data.tokenizer import corpus_token_stats, train_tokenizer, unigram_loss

SEQ_LEN = 48


@pytest.fixture(scope="module")
def docs():
    return [d for _, d in zip(range(60), sources.iter_documents("python_stdlib"))]


@pytest.fixture(scope="module")
def tokenizer(docs, tmp_path_factory):
    return train_tokenizer((d["text"] for d in docs), str(tmp_path_factory.mktemp("t") / "m.model"), 400)


def test_sections_rebuild_the_file_and_respect_the_limit():
    paths, _ = sources._stdlib_paths()
    text = max((open(p, encoding="utf-8", errors="replace").read() for p in paths[:200]), key=len)
    pieces = sources.sections(text, limit=4000)
    assert len(pieces) > 1 and "".join(pieces) == text
    assert all(len(p) <= 4000 or "\n" not in p.rstrip("\n") for p in pieces)


def test_tokenizer_round_trips_code_and_counts_bytes_exactly(tokenizer, docs):
    texts = [d["text"] for d in docs[:10]] + ["naïve café — 日本語\n\tindent\n"]
    for text, ids in zip(texts, tokenizer.encode(texts)):
        assert tokenizer.decode(ids) == text
        assert tokenizer.piece_bytes[ids].sum() == len(text.encode())


def test_rows_are_a_contiguous_stream_with_one_token_overlap(tokenizer, docs):
    stream = PackedBatches(docs, tokenizer, SEQ_LEN, 4, shuffle=False, streams=1)
    batch = stream.next_batch()
    assert (batch["inputs"][:, 1:] == batch["targets"][:, :-1]).all()
    assert (batch["targets"][:-1, -1] == batch["inputs"][1:, 0]).all()
    expected = np.array(tokenizer.encode([docs[0]["text"]])[0][:SEQ_LEN + 1])
    np.testing.assert_array_equal(batch["inputs"][0], expected[:SEQ_LEN])


def test_each_row_of_a_batch_is_its_own_stream_over_its_share_of_the_documents(tokenizer, docs):
    stream = PackedBatches(docs, tokenizer, SEQ_LEN, 4, shuffle=False)
    first, second = stream.next_batch(), stream.next_batch()
    # Row i continues row i of the previous batch, with the usual one-token overlap ...
    assert (first["targets"][:, -1] == second["inputs"][:, 0]).all()
    # ... and starts on document i: rows of one batch come from different documents.
    encoded = tokenizer.encode([d["text"] for d in docs[:4]])
    for i, ids in enumerate(encoded):
        np.testing.assert_array_equal(first["inputs"][i, :min(SEQ_LEN, len(ids))], ids[:SEQ_LEN])
    with pytest.raises(ValueError, match="divisor"):
        PackedBatches(docs, tokenizer, SEQ_LEN, 4, streams=3)


def objective_options(objective: str, tokenizer) -> dict:
    sentinels = range(tokenizer.vocab_size, tokenizer.vocab_size + 20) if objective == "span_corruption" else ()
    return {"objective": objective, "sentinels": sentinels}


@pytest.mark.parametrize("objective", ["lm", "prefix_lm", "span_corruption"])
def test_restored_iterator_continues_exactly(tokenizer, docs, objective):
    options = objective_options(objective, tokenizer)
    stream = PackedBatches(docs, tokenizer, SEQ_LEN, 4, seed=3, **options)
    for _ in range(7):
        stream.next_batch()
    state = stream.get_state()
    expected = [stream.next_batch() for _ in range(5)]
    restored = PackedBatches(docs, tokenizer, SEQ_LEN, 4, seed=3, **options)
    restored.set_state(state)
    for a, b in zip(expected, (restored.next_batch() for _ in range(5))):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_epochs_reshuffle_and_cover_every_document(tokenizer, docs):
    few = docs[:5]
    stream = PackedBatches(few, tokenizer, SEQ_LEN, 2, seed=0)
    orders = [list(stream._permutation(e)) for e in range(3)]
    assert all(sorted(o) == list(range(5)) for o in orders)
    assert orders[0] != orders[1] or orders[1] != orders[2]


def test_prefix_lm_weighs_only_targets_after_the_prefix(tokenizer, docs):
    batch = PackedBatches(docs, tokenizer, SEQ_LEN, 8, objective="prefix_lm").next_batch()
    for weights, prefix in zip(batch["weights"], batch["prefix_len"]):
        assert 1 <= prefix < SEQ_LEN
        assert weights[:prefix - 1].sum() == 0 and weights[prefix - 1:].all()


def test_span_corruption_batches_reconstruct_the_stream(tokenizer, docs):
    options = objective_options("span_corruption", tokenizer)
    lm = PackedBatches(docs, tokenizer, SEQ_LEN, 4, shuffle=False).next_batch()
    batch = PackedBatches(docs, tokenizer, SEQ_LEN, 4, shuffle=False, **options).next_batch()
    assert (batch["inputs"][:, 0] == DECODER_START_ID).all()
    assert (batch["inputs"][:, 1:] == batch["targets"][:, :-1]).all()  # the decoder is teacher-forced
    for row, encoder_inputs, targets in zip(lm["inputs"], batch["encoder_inputs"], batch["targets"]):
        np.testing.assert_array_equal(uncorrupt_spans(encoder_inputs, targets, options["sentinels"]), row)
        noise = np.isin(targets, options["sentinels"], invert=True).sum()
        assert noise == round(0.15 * SEQ_LEN)  # T5's default noise density
    with pytest.raises(ValueError, match="sentinel"):
        PackedBatches(docs, tokenizer, SEQ_LEN, 4, objective="span_corruption", sentinels=range(1000, 1001))


def test_eval_batches_spread_over_the_split_and_count_bytes(tokenizer, docs):
    batches = eval_batches(docs, tokenizer, SEQ_LEN, 4, max_batches=3, oversample=50)
    assert len(batches) == 3
    starts = [tuple(row[:8]) for b in batches for row in b["inputs"]]
    assert len(set(starts)) == len(starts)  # distinct rows, not a repeated one
    for b in batches:
        np.testing.assert_array_equal(b["bytes"], tokenizer.piece_bytes[b["targets"]].sum(axis=1))


def test_unigram_loss_is_the_entropy_of_the_frequencies(tokenizer, docs):
    stats = corpus_token_stats(tokenizer, (d["text"] for d in docs))
    counts = np.asarray(stats["token_counts"], float)
    assert counts.sum() == stats["train_tokens"] == sum(len(i) + 1 for i in tokenizer.encode([d["text"] for d in docs]))
    batches = [PackedBatches(docs, tokenizer, SEQ_LEN, 16, shuffle=False).next_batch()]
    p = (counts + 1) / (counts + 1).sum()
    manual = -np.log(p[batches[0]["targets"]]).mean()
    assert unigram_loss(stats["token_counts"], batches) == pytest.approx(manual)
    assert unigram_loss(stats["token_counts"], batches) > 3.0  # a 400-piece vocabulary is far from trivial


def test_mixture_order_follows_the_weights_and_counts_epochs_per_source():
    doc_sources = np.repeat([0, 1], [100, 300])  # a small source and a large one
    order = DocumentOrder(doc_sources, ["small", "large"], seed=0, weights={"small": 1.0, "large": 1.0})
    epoch = order(0)
    assert len(epoch) == 400 and np.array_equal(epoch, order(0))
    drawn_small = np.isin(epoch, np.arange(100)).sum()
    assert 170 <= drawn_small <= 230  # half the draws, so the small source is read about twice
    assert not np.array_equal(order(1), epoch)
    epochs = order.source_epochs([(1, 0)])
    assert epochs["small"] == pytest.approx(drawn_small / 100) and epochs["large"] == pytest.approx((400 - drawn_small) / 300)
    uniform = DocumentOrder(doc_sources, ["small", "large"], seed=0)
    assert sorted(uniform(0)) == list(range(400))
    assert uniform.source_epochs([(2, 200)]) == pytest.approx({"small": 2 + np.isin(uniform(2)[:200], np.arange(100)).sum() / 100,
                                                          "large": 2 + np.isin(uniform(2)[:200], np.arange(100, 400)).sum() / 300})
    # Four interleaved streams: stream i reads documents i, i + 4, ... of each epoch.
    positions = [(1, 10), (1, 0), (0, 99), (2, 5)]
    shares = [np.concatenate([uniform(e)[i::4] for e in range(epoch)] + [uniform(epoch)[i::4][:index]])
              for i, (epoch, index) in enumerate(positions)]
    read = np.concatenate(shares)
    assert uniform.source_epochs(positions) == pytest.approx({"small": np.isin(read, np.arange(100)).sum() / 100,
                                                             "large": np.isin(read, np.arange(100, 400)).sum() / 300})
    capped = DocumentOrder(doc_sources, ["small", "large"], seed=0, weights={"small": 1, "large": 1}, max_docs_per_source=50)
    used = set(capped(0).tolist()) | set(capped(1).tolist())
    assert len(used & set(range(100, 400))) == 50  # the large source contributes one fixed 50-document subset
    with pytest.raises(ValueError, match="nowhere"):
        DocumentOrder(doc_sources, ["small", "large"], seed=0, weights={"nowhere": 1.0})


def test_prepare_reports_documents_and_tokens_of_every_stage(tiny_corpus, tmp_path, capsys):
    gin.clear_config()
    bindings = tiny_corpus + ["DataConfig.vocab_size = 512"]
    code = prepare.main(["--gin_file=base.gin", *[f"--gin_bindings={b}" for b in bindings], f"--json={tmp_path / 'r.json'}"])
    gin.clear_config()
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    train = report["stages"]["train"]
    assert {"sanitize", "scrub_pii", "decontaminate", "exact_dedup", "near_dedup", "perplexity"} <= set(train)
    assert "decontaminate" not in report["stages"]["validation"]  # held-out text is what it protects
    (source, rate), = report["tokens_per_byte"].items()
    assert 0.1 < rate < 1.0
    assert "~M tok out" in out and "tokens under the 512-piece tokenizer" in out
    assert prepare.main(["--gin_file=no_such.gin"]) == 2
