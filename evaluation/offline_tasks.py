"""Few-shot tasks made from the corpus's held-out text, decontaminated against its train split.

    python -m evaluation.offline_tasks --gin_file=quickstart.gin --task=gcide_definition [--items=200] [--seed=0] \\
        --out=TASK.jsonl

writes a task in evaluation/tasks.py's format (score it with `python -m evaluation.tasks --task_file=`,
or name it with `--task=` there) and prints the candidates found, those dropped as contaminated, the
items written and chance. Every item comes from a validation document and says which in its
"source" field ("gcide:<document id>"). The tasks:

- `gcide_definition` (4 choices): a GCIDE definition (the entry's first sense), choose its headword;
  `gcide_word`, the reverse: a headword, choose its definition.
- `docstring_name` (4 choices): a Python function's docstring (its first paragraph) and signature,
  choose the function's name (python_stdlib, functions found with `ast`).
- `cloze` (generation, exact match) and `cloze_mc` (4 choices): a prose paragraph's last word given
  the paragraph before it, as LAMBADA (Paperno et al. 2016), where that word is a real word of 3 or
  more letters ending a sentence (python_docs, perl_pod, and python_stdlib's comments and docstrings).

Distractors are the answers of other candidates of the same task. Decontamination, as GPT-3's
(Brown et al. 2020, appendix C), with normalised words (data/clean/hashing.py): an item is dropped
when one of its answer-bearing texts (the source passage it was made from, and the definition or
docstring it shows or asks for) shares a 13-word n-gram with a train document of the same source,
or, when that text has fewer than 13 words, appears whole in one. The train split's words are hashed
once per corpus and cached beside it (offline_tasks/, keyed by the corpus's fingerprint).

Deterministic: the same corpus, task, item count and seed give the same items, whatever the order of
the corpus's documents (they are sorted by source and id first); fewer items asked for give the first
of those asked for with more. `build_task(name, data, n_items, seed)` is the one entry point for the
built-in tasks of evaluation/tasks.py too.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import sys
import textwrap
from typing import Callable

import numpy as np

import cli
from data.clean import hashing
from data.clean.dedup import KeyStore
from evaluation import tasks

NGRAM = 13  # words, as GPT-3's decontamination
CHOICES = 4


@dataclasses.dataclass(frozen=True)
class Candidate:
    context: str
    answer: str
    source: str           # "<corpus source>:<document id>"
    checked: tuple        # the answer-bearing texts that must not occur in the train split


# --- GCIDE ------------------------------------------------------------------------------

_HEADWORD = re.compile(r"([A-Za-z][a-z'-]*[a-z]) \\")  # "Quern \Quern\, n. [AS. cweorn ...]"
_SOURCE_MARK = re.compile(r"\s*\[")  # a line opening with "[": [1913 Webster], [PJC], [WordNet 1.5]
_SENSE_NUMBER = re.compile(r"^\d+\.\s+")
_LABEL = re.compile(r"\s\[[^\]]*\]")  # usage labels: [Obs.], [R.], [Eng.] (not escapes such as qu[ae]rn)
_CITATION = re.compile(r"\s--[A-Z].*$")  # "... --Shak." ends a sense
_DERIVED_FORM = re.compile(r"\s--\s(?:n|a|adv|v\. [ti])\.(?:\s.*)?$")  # "...; a lemur. -- n. (Zool.) One of ..."
# dictd's index leaves the next entry's headword on a line of its own at the end of some entries
_LEAKED_HEADWORD = re.compile(r"\n[ \t]*[A-Za-z][\w-]*[ \t]*\n?$")
_CROSS_REFERENCE = re.compile(r"^(\(.*?\)\s*)?(See|Same as|Alt\.|Variant|Obs\.|An obs|pl\. of|imp\.|p\. p\.|"
                              r"p\. pr\.|of )")
_DEFINITION_WORDS = (3, 40)


@dataclasses.dataclass(frozen=True)
class Entry:
    headword: str  # lower-cased
    definition: str
    passage: str   # the entry's text up to the end of its first sense


def _header_length(lines: list[str]) -> int:
    """Lines of the entry's header (headwords, pronunciations, part of speech, etymology): up to
    the first line where its brackets close and that ends as a header does ('.', ']' or ')')."""
    for k in range(len(lines)):
        header = "\n".join(lines[:k + 1])
        if header.count("[") <= header.count("]") and lines[k].rstrip().endswith((".", "]", ")")):
            return k + 1
    return len(lines)


def gcide_entry(doc: dict) -> Entry | None:
    """A GCIDE entry's first headword and first sense, cleaned of markup; None when the entry is
    not a plain word defined in plain words (cross-references, GCIDE's character escapes)."""
    match = _HEADWORD.match(doc["text"])
    if not match:
        return None
    lines = _LEAKED_HEADWORD.sub("", doc["text"]).split("\n")
    start = _header_length(lines)
    while start < len(lines) and (not lines[start].strip() or _SOURCE_MARK.match(lines[start])):
        start += 1
    end = start
    while end < len(lines) and lines[end].strip() and not _SOURCE_MARK.match(lines[end]):
        end += 1
    sense = _SENSE_NUMBER.sub("", " ".join(" ".join(lines[start:end]).split()))
    definition = _CITATION.sub("", _DERIVED_FORM.sub("", _LABEL.sub("", sense)))
    definition = definition.replace("{", "").replace("}", "").strip()  # {Enchase}: a cross-reference's markup
    headword = match.group(1).lower()
    words = len(definition.split())
    if (not _DEFINITION_WORDS[0] <= words <= _DEFINITION_WORDS[1] or re.search(r"[\[\]\\?*\"`]|\(a\)", definition)
            or _CROSS_REFERENCE.match(definition) or headword in definition.lower()):
        return None
    return Entry(headword, definition, "\n".join(lines[:end]))


def _gcide_candidates(docs: list[dict], word_to_definition: bool) -> list[Candidate]:
    out = []
    for doc in docs:
        entry = gcide_entry(doc)
        if entry is None:
            continue
        if word_to_definition:
            context, answer = f"Word: {entry.headword}\nDefinition:", f" {entry.definition}"
        else:
            context, answer = f"Definition: {entry.definition}\nWord:", f" {entry.headword}"
        out.append(Candidate(context, answer, _source(doc), (entry.passage, entry.definition)))
    return out


# --- Python docstrings -----------------------------------------------------------------------

_DEF_LINE = re.compile(r"([ \t]*)(async[ \t]+)?def[ \t]+\w+[ \t]*\(")
_DOCSTRING_WORDS = (3, 60)


def _function_sources(text: str):
    """Each function's lines (from `def` to the end of its indented body), dedented: a document
    is a section of a file, cut at a blank line, so it need not parse whole."""
    lines = text.split("\n")
    for k, line in enumerate(lines):
        match = _DEF_LINE.match(line)
        if not match:
            continue
        indent, end = len(match.group(1).expandtabs()), k + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end].expandtabs()) -
                                    len(lines[end].expandtabs().lstrip()) > indent):
            end += 1
        yield textwrap.dedent("\n".join(lines[k:end]))


def _docstring_candidates(docs: list[dict]) -> list[Candidate]:
    out = []
    for doc in docs:
        for source in _function_sources(doc["text"]):
            try:
                function = ast.parse(source).body[0]
            except SyntaxError:
                continue
            docstring = ast.get_docstring(function)
            name = function.name
            if not docstring or (name.startswith("__") and name.endswith("__")):
                continue
            summary = " ".join(docstring.split("\n\n")[0].split())
            signature = f"({ast.unparse(function.args)})" + (
                f" -> {ast.unparse(function.returns)}" if function.returns else "")
            if (not _DOCSTRING_WORDS[0] <= len(summary.split()) <= _DOCSTRING_WORDS[1]
                    or re.search(rf"\b{re.escape(name)}\b", summary + signature, re.IGNORECASE)):
                continue
            passage = "\n".join(source.split("\n")[:function.body[0].end_lineno])  # up to the docstring's end
            out.append(Candidate(f"Docstring: {summary}\nSignature: {signature}\nName:", f" {name}",
                                 _source(doc), (passage, summary)))
    return out


# --- cloze -------------------------------------------------------------------------------------

CLOZE_STOPS = ["\n", ".", ",", ";", ":", "!", "?"]
_LAST_WORD = re.compile(r" ([A-Za-z][a-z]{2,})[.!?]$")
_CODE = re.compile(r'"""|\'\'\'|>>>|^(@|def |class |import |from |return )', re.MULTILINE)
_CLOZE_MIN_WORDS = 15
_PROSE_FRACTION = 0.85  # of characters letters or spaces: code and tables have less


def prose_paragraphs(text: str):
    """The document's paragraphs (blank-line separated) that read as prose, on one line each:
    comment blocks count, with their '#' taken off."""
    for paragraph in re.split(r"\n[ \t]*\n", text):
        lines = textwrap.dedent(paragraph.strip("\n")).split("\n")
        if all(line.startswith("#") for line in lines):
            lines = [line.lstrip("#") for line in lines]
        prose = " ".join(" ".join(lines).split())
        if (len(prose.split()) >= _CLOZE_MIN_WORDS and not _CODE.search("\n".join(lines))
                and sum(c.isalpha() or c == " " for c in prose) >= _PROSE_FRACTION * len(prose)):
            yield prose


def _cloze_candidates(docs: list[dict]) -> list[Candidate]:
    out = []
    for doc in docs:
        for paragraph in prose_paragraphs(doc["text"]):
            match = _LAST_WORD.search(paragraph)
            if match:
                out.append(Candidate(paragraph[:match.start()], f" {match.group(1)}", _source(doc), (paragraph,)))
    return out


def _source(doc: dict) -> str:
    return f"{doc['source']}:{doc['id']}"


# --- the tasks ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class OfflineTask:
    sources: tuple             # the corpus sources whose validation documents it reads
    candidates: Callable       # sorted documents -> [Candidate]
    multiple_choice: bool


PROSE_SOURCES = ("perl_pod", "python_docs", "python_stdlib")
OFFLINE_TASKS = {
    "gcide_definition": OfflineTask(("gcide",), lambda docs: _gcide_candidates(docs, False), True),
    "gcide_word": OfflineTask(("gcide",), lambda docs: _gcide_candidates(docs, True), True),
    "docstring_name": OfflineTask(("python_stdlib",), _docstring_candidates, True),
    "cloze": OfflineTask(PROSE_SOURCES, _cloze_candidates, False),
    "cloze_mc": OfflineTask(PROSE_SOURCES, _cloze_candidates, True),
}
TASK_NAMES = sorted([*tasks.TASKS, *OFFLINE_TASKS])


@dataclasses.dataclass
class Built:
    items: list
    candidates: int
    dropped: dict  # reason -> candidates dropped as contaminated
    chance: float


def build(name: str, heldout_docs, train_words: Callable, n_items: int, seed: int) -> Built:
    """The offline task `name` from held-out documents (dicts of "text", "source" and "id"), its
    candidates checked against train_words(source), the train split's words (see words_of_documents)."""
    task = OFFLINE_TASKS[name]
    docs = sorted((doc for doc in heldout_docs if doc["source"] in task.sources),
                  key=lambda doc: (doc["source"], doc["id"]))
    first_of_context: dict = {}
    for candidate in task.candidates(docs):
        first_of_context.setdefault(candidate.context, candidate)
    candidates = list(first_of_context.values())
    reasons = contamination(candidates, train_words)
    clean = [c for c, reason in zip(candidates, reasons) if reason is None]
    dropped = {reason: reasons.count(reason) for reason in sorted(set(reasons) - {None})}
    items = _draw(clean, sorted({c.answer for c in candidates}), task.multiple_choice, n_items, seed)
    chance = float(np.mean([1 / len(item["choices"]) for item in items])) if task.multiple_choice and items else 0.0
    return Built(items, len(candidates), dropped, chance)


def _draw(candidates: list[Candidate], answers: list[str], multiple_choice: bool, n_items: int, seed: int) -> list:
    """n_items of the candidates in an order drawn with the seed; each item's distractors (other
    answers, distinct from its own and each other ignoring case) and their places drawn with
    (seed, its candidate's index), so that fewer items are the first of more."""
    pool = list({answer.lower(): answer for answer in answers}.values())
    if multiple_choice and candidates and len(pool) < 2:
        raise ValueError(f"{len(pool)} distinct answers cannot make a multiple-choice item")
    items = []
    for k in np.random.default_rng(seed).permutation(len(candidates))[:n_items]:
        candidate = candidates[k]
        item = {"context": candidate.context}
        if multiple_choice:
            rng = np.random.default_rng([seed, k])
            others = [answer for answer in pool if answer.lower() != candidate.answer.lower()]
            choices = [candidate.answer, *(others[i] for i in rng.choice(len(others), min(CHOICES - 1, len(others)),
                                                                         replace=False))]
            order = rng.permutation(len(choices))
            item.update(choices=[choices[i] for i in order], gold=int(np.argmin(order)))
        else:
            item.update(target=candidate.answer, stop=CLOZE_STOPS)
        items.append(tasks.check_item({**item, "source": candidate.source}, candidate.source))
    return items


# --- decontamination ---------------------------------------------------------------------------

def contamination(candidates: list[Candidate], train_words: Callable) -> list:
    """Per candidate, None, or why it is contaminated: 'shares_train_ngram' (a checked text shares
    an NGRAM-word n-gram with the train documents of its source) or 'appears_in_train' (a checked
    text of fewer words appears whole in one)."""
    reasons = [None] * len(candidates)
    by_source: dict = {}
    for k, candidate in enumerate(candidates):
        by_source.setdefault(candidate.source.split(":", 1)[0], []).append(k)
    for source, indices in sorted(by_source.items()):
        texts = [text for k in indices for text in candidates[k].checked]
        owner = [k for k in indices for _ in candidates[k].checked]
        for k, reason in zip(owner, occurrences_in(texts, train_words(source))):
            reasons[k] = reasons[k] or reason
    return reasons


def occurrences_in(texts: list[str], train: hashing.Words, n: int = NGRAM) -> list:
    """Per text, 'shares_train_ngram' if it has n words or more and one of its n-grams is one of
    train's, 'appears_in_train' if it has fewer and its words occur in a row in train, else None."""
    words = hashing.EncodedBatch(texts).words
    counts = np.bincount(words.doc, minlength=len(texts))
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    queries = {}  # n-gram length -> (hashes asked about, the text each belongs to)
    grams, starts = words.ngrams(n)
    queries[n] = (grams, words.doc[starts])
    for length in sorted(set(counts[(counts > 0) & (counts < n)].tolist())):
        short = np.flatnonzero(counts == length)
        queries[length] = (words.polynomial(length)[firsts[short]], short)
    found = _found_in(train, {length: hashes for length, (hashes, _) in queries.items()})
    reasons = [None] * len(texts)
    for length, (hashes, owners) in queries.items():
        for text in np.unique(owners[np.isin(hashes, found[length])]):
            reasons[text] = "shares_train_ngram" if length == n else "appears_in_train"
    return reasons


_CHUNK_WORDS = 1 << 20  # train words hashed into n-grams at a time: 8 MB per n-gram length


def _found_in(train: hashing.Words, queries: dict) -> dict:
    """For each length, those of its query hashes that some n-gram of that length in train has."""
    stores = {}
    for length, hashes in queries.items():
        stores[length] = KeyStore()
        stores[length].add(np.unique(hashes))
    found = {length: [np.zeros(0, np.uint64)] for length in queries}
    # Cut at document starts: n-grams never span two documents, so the chunks miss none.
    cuts = np.unique(np.searchsorted(train.doc, train.doc[::_CHUNK_WORDS]))
    for lo, hi in zip(cuts, [*cuts[1:], len(train.hashes)]):
        chunk = hashing.Words(train.hashes[lo:hi], None, train.doc[lo:hi], train.num_docs)  # lengths: unused
        for length, store in stores.items():
            grams, _ = chunk.ngrams(length)
            found[length].append(grams[store.contains(grams)])
    return {length: np.unique(np.concatenate(parts)) for length, parts in found.items()}


# --- the train split's words -------------------------------------------------------------------

_ENCODE_BYTES = 8 << 20  # text hashed at a time: EncodedBatch holds 8 bytes per byte


def _words_of_texts(texts) -> tuple[np.ndarray, np.ndarray]:
    """(word hashes, words per text) of an iterable of texts."""
    hashes, counts, batch, size = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], [], 0

    def flush():
        words = hashing.EncodedBatch(batch).words
        hashes.append(words.hashes)
        counts.append(np.bincount(words.doc, minlength=len(batch)))
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= _ENCODE_BYTES:
            flush()
            batch, size = [], 0
    if batch:
        flush()
    return np.concatenate(hashes), np.concatenate(counts)


def _as_words(hashes: np.ndarray, counts: np.ndarray) -> hashing.Words:
    return hashing.Words(hashes, None, np.repeat(np.arange(len(counts)), counts), len(counts))  # lengths: unused


def words_of_documents(docs) -> Callable:
    """train_words for `build`: source -> the normalised words of those of `docs` from it."""
    docs = list(docs)
    return lambda source: _as_words(*_words_of_texts(doc["text"] for doc in docs if doc["source"] == source))


def words_of_corpus(data) -> Callable:
    """train_words for `build`: source -> the words of the corpus's train documents from it, hashed
    once and cached under the corpus's directory, keyed by its fingerprint."""
    def train_words(source: str) -> hashing.Words:
        path = os.path.join(data.train_docs.dataset_info.data_dir, "offline_tasks",
                            f"train_words_{source}_{data.fingerprint}.npz")
        if not os.path.exists(path):
            hashes, counts = _words_of_texts(_train_texts(data, source))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = f"{path}.{os.getpid()}.npz"  # written whole, then renamed: runs may build it at once
            np.savez(partial, hashes=hashes, counts=counts)
            os.replace(partial, path)
        with np.load(path) as cached:
            return _as_words(cached["hashes"], cached["counts"])
    return train_words


_READ_BATCH = 4096


def _train_texts(data, source: str):
    if source not in data.source_names:
        return
    indices = np.flatnonzero(data.doc_sources == data.source_names.index(source)).tolist()
    for lo in range(0, len(indices), _READ_BATCH):
        for doc in data.train_docs.__getitems__(indices[lo:lo + _READ_BATCH]):
            yield doc["text"].decode("utf-8", errors="replace")


def heldout_documents(data, sources) -> list[dict]:
    """The corpus's validation documents from `sources`, as dicts of str."""
    docs = [{key: doc[key].decode("utf-8", errors="replace") for key in ("text", "source", "id")}
            for doc in data.eval_docs.__getitems__(list(range(len(data.eval_docs))))]
    return [doc for doc in docs if doc["source"] in sources]


# --- the entry points --------------------------------------------------------------------------

def build_task_with_counts(name: str, data, n_items: int, seed: int) -> Built:
    if name in tasks.TASKS:  # made from the seed alone: nothing to decontaminate
        items = tasks.TASKS[name](n_items, seed)
        chance = float(np.mean([1 / len(item["choices"]) for item in items])) if "choices" in items[0] else 0.0
        return Built(items, n_items, {}, chance)
    if name not in OFFLINE_TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")
    if data.doc_sources is None:
        raise ValueError(f"the corpus {data.name} does not say which source each document is from")
    sources = OFFLINE_TASKS[name].sources
    built = build(name, heldout_documents(data, sources), words_of_corpus(data), n_items, seed)
    if not built.items:
        raise ValueError(f"the corpus {data.name} gives no items of {name} (its validation documents of "
                         f"{', '.join(sources)}: {built.candidates} candidates, {built.dropped} contaminated)")
    return built


def build_task(name: str, data, n_items: int, seed: int) -> list[dict]:
    """The items of any task in TASK_NAMES: the offline ones from `data` (a data.loader.Data), the
    built-in ones of evaluation/tasks.py from the seed (data unused). At most n_items: an offline
    task has as many as its clean candidates."""
    return build_task_with_counts(name, data, n_items, seed).items


def _main(argv: list[str]) -> int:
    parser = cli.ArgumentParser(prog="python -m evaluation.offline_tasks", description=__doc__.splitlines()[0],
                                gin=True)
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--items", type=cli.whole_number(1), default=200, help="at most this many (default 200)")
    parser.add_argument("--seed", type=cli.whole_number(0), default=0)
    parser.add_argument("--out", required=True, help="the JSONL task file to write (never overwritten)")
    args = parser.parse_args(argv)
    if os.path.exists(args.out):
        raise cli.InputError(f"{args.out} exists; not overwriting it")
    data = None
    if args.task in OFFLINE_TASKS:
        data = load_corpus(args.gin_file, args.gin_bindings)
    built = build_task_with_counts(args.task, data, args.items, args.seed)
    try:
        with open(args.out, "x") as out:
            out.writelines(json.dumps(item) + "\n" for item in built.items)
    except OSError as error:  # a missing directory; a file that appeared since
        raise cli.InputError(f"cannot write {args.out}: {error.strerror}") from None
    print(json.dumps({"task": args.task, "candidates": built.candidates, "dropped": built.dropped,
                      "written": len(built.items), "chance": built.chance, "ngram": NGRAM, "out": args.out}))
    return 0


def load_corpus(gin_files: list[str], bindings: list[str]):
    """The data.loader.Data of a run's gin config; bad config or corpus: cli.InputError."""
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
    from data import loader
    from data.corpus import CorpusError
    from train.main import parse_gin
    parse_gin(gin_files, bindings)
    try:
        return loader.load(loader.DataConfig())
    except CorpusError as error:
        raise cli.InputError(f"corpus: {error}") from None


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
