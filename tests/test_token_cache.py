"""The train documents tokenized once (data/tokenizer.py's TokenizedDocuments): the same tokens as the
tokenizer, the same batches as packing from text, and a cache that is rebuilt when it should be."""
import os

import numpy as np
import pytest

from data.pipeline import PackedBatches
from data.tokenizer import tokenized_documents, train_tokenizer


@pytest.fixture(scope="module")
def docs(stdlib_text):
    return stdlib_text[1]


@pytest.fixture(scope="module")
def tokenizer(stdlib_text):
    return stdlib_text[0]


def test_each_document_holds_its_tokens_and_eos(docs, tokenizer, tmp_path):
    tokenized = tokenized_documents(tokenizer, lambda: (d["text"] for d in docs), str(tmp_path), "train")
    assert len(tokenized) == len(docs)
    for i in np.random.default_rng(0).permutation(len(docs))[:20]:
        expected = tokenizer.sp.encode(docs[i]["text"]) + [tokenizer.sp.eos_id()]
        assert tokenized[i].tolist() == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batches_from_the_cache_equal_batches_packed_from_text(docs, tokenizer, tmp_path, seed):
    rng = np.random.default_rng(seed)
    batch_size, seq_len = int(rng.choice([2, 4, 8])), int(rng.integers(16, 96))
    objective = ["lm", "prefix_lm"][seed % 2]
    tokenized = tokenized_documents(tokenizer, lambda: (d["text"] for d in docs), str(tmp_path), "train")
    options = dict(seed=seed, objective=objective, encode_chunk=int(rng.integers(1, 9)))
    from_text = PackedBatches(docs, tokenizer, seq_len, batch_size, **options)
    from_cache = PackedBatches(docs, tokenizer, seq_len, batch_size, tokenized=tokenized, **options)
    for step in range(40):
        if step == 17:  # a resume in the middle: the cache's position is the text pipeline's
            state = from_text.get_state()
            assert from_cache.get_state() == state
            from_cache = PackedBatches(docs, tokenizer, seq_len, batch_size, tokenized=tokenized, **options)
            from_cache.set_state(state)
        a, b = from_text.next_batch(), from_cache.next_batch()
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_the_cache_is_read_back_and_rebuilt_when_cut_short_or_retrained(docs, tokenizer, tmp_path):
    texts = lambda: (d["text"] for d in docs)  # noqa: E731
    first = tokenized_documents(tokenizer, texts, str(tmp_path), "train")

    def refuse():
        raise AssertionError("a cached build must not read the texts again")
    again = tokenized_documents(tokenizer, refuse, str(tmp_path), "train")
    np.testing.assert_array_equal(first.tokens, again.tokens)
    offsets = [name for name in os.listdir(tmp_path) if name.endswith(".offsets.npy")]
    os.remove(tmp_path / offsets[0])  # a build killed before its last file
    rebuilt = tokenized_documents(tokenizer, texts, str(tmp_path), "train")
    np.testing.assert_array_equal(first.offsets, rebuilt.offsets)
    other = train_tokenizer((d["text"] for d in docs[:40]), str(tmp_path / "other.model"), 500)
    retrained = tokenized_documents(other, texts, str(tmp_path), "train")
    assert retrained[0].tolist() == other.sp.encode(docs[0]["text"]) + [other.sp.eos_id()]
    assert len([name for name in os.listdir(tmp_path) if name.endswith(".offsets.npy")]) == 2


def test_a_cache_of_other_documents_is_refused(docs, tokenizer, tmp_path):
    tokenized = tokenized_documents(tokenizer, lambda: (d["text"] for d in docs[:10]), str(tmp_path), "train")
    with pytest.raises(ValueError, match="10 tokenized documents for 40"):
        PackedBatches(docs, tokenizer, 32, 4, tokenized=tokenized)
