"""Offline tasks (evaluation/offline_tasks.py) checked against references written here: GCIDE entries
parsed by hand, documented functions found by walking whole modules with `ast`, paragraph ends read off
the paragraphs, and decontamination against a brute-force scan of the train documents' word n-grams.

The documents are real text that every machine has (the standard library's sources, split into
sections as the corpus splits them) or that is copied in here (GCIDE entries, as dict-gcide holds them).
"""
import json
import os
import re
import sysconfig

import numpy as np
import pytest

from data import sources
from evaluation import offline_tasks, tasks

STDLIB = sysconfig.get_paths()["stdlib"]


def stdlib_documents(*names: str) -> list[dict]:
    """Files of the standard library as the corpus holds them: sections of at most 16K characters."""
    docs = []
    for name in names:
        with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
            text = f.read()
        docs += [{"source": "python_stdlib", "id": f"{name}#{k}", "text": section}
                 for k, section in enumerate(sources.sections(text))]
    return docs


HELDOUT_FILES = ("heapq.py", "difflib.py", "functools.py", "queue.py", "sched.py")
TRAIN_FILES = ("fractions.py", "calendar.py", "contextlib.py")

# (document id, text as dict-gcide holds it, (headword, first sense) or None where no item is made)
GCIDE_ENTRIES = [
    ("Amerceable@1156043", 'Amerceable \\A*merce"a*ble\\, a.\n   Liable to be amerced.\n   [1913 Webster]\n',
     ("amerceable", "Liable to be amerced.")),
    ("Asse@2157789", "Asse \\Asse\\, n. (Zool.)\n   A small foxlike animal ({Vulpes cama}) of South Africa,\n"
     "   valued for its fur.\n   [1913 Webster]\n",
     ("asse", "A small foxlike animal (Vulpes cama) of South Africa, valued for its fur.")),
    ("atomisation@2302876", "atomisation \\atomisation\\ n.\n   1. separating something into fine particles.\n\n"
     "   Syn: atomization, fragmentation\n        [WordNet 1.5]\n\n   2. annihilation by reducing something to "
     "atoms.\n\n   Syn: atomization\n        [WordNet 1.5]\n",
     ("atomisation", "separating something into fine particles.")),
    ("Auster@2437046", 'Auster \\Aus"ter\\, n. [L. auster a dry, hot, south wind; the\n   south.]\n'
     "   The south wind. --Pope.\n   [1913 Webster]\n", ("auster", "The south wind.")),
    ("Batture@3028939", 'Batture \\Bat`ture"\\, n. [F., fr. battre to beat.]\n   An elevated river bed or sea bed.\n'
     "   [1913 Webster]\n", ("batture", "An elevated river bed or sea bed.")),
    ("Cachexia@4867859", 'Cachexia \\Ca*chex"i*a\\, Cachexy \\Ca*chex"y\\, n. [L. cachexia,\n   Gr. kachexi`a; '
     'kako`s bad + "e`xis condition.]\n   A condition of ill health and impairment of nutrition due to\n'
     "   impoverishment of the blood, esp. when caused by a specific\n   morbid process (as cancer or tubercle).\n"
     "   [1913 Webster]\n",
     ("cachexia", "A condition of ill health and impairment of nutrition due to impoverishment of the blood, "
                  "esp. when caused by a specific morbid process (as cancer or tubercle).")),
    ("Chopness@6112753", 'Chopness \\Chop"ness\\, n.\n   A kind of spade. [Eng.]\n   [1913 Webster]\n',
     ("chopness", "A kind of spade.")),
    ("Discerpibility@10190418", 'Discerpibility \\Dis*cerp`i*bil"i*ty\\, Discerptibility\n'
     '\\Dis*cerp`ti*bil"i*ty\\, n.\n   Capability or liableness to be discerped. [R.] --Wollaston.\n'
     "   Discerpible\n", ("discerpibility", "Capability or liableness to be discerped.")),
    ("Embrown@11715452", 'Embrown \\Em*brown"\\, v. t. [Pref. em- (L. in) + brown.]\n   To give a brown color to; '
     "to imbrown.\n   [1913 Webster]\n\n         Summer suns embrown the laboring swain.  --Fenton.\n"
     "   [1913 Webster]\n", ("embrown", "To give a brown color to; to imbrown.")),
    ("handsewn@16088742", "handsewn \\handsewn\\ adj.\n   sewn by hand rather than machine.\n\n   Syn: handstitched.\n"
     "        [WordNet 1.5]\n", ("handsewn", "sewn by hand rather than machine.")),
    ("Monopody@22809547", 'Monopody \\Mo*nop"o*dy\\, n. [Mono- + Gr. poy`s, podo`s, foot: cf.\n   ?, ?, '
     "one-footed.] (Pros.)\n   A measure of but a single foot.\n   [1913 Webster]\n",
     ("monopody", "A measure of but a single foot.")),
    ("Querent@28450248", 'Querent \\Que"rent\\, n. [L. querens, p. pr. of queri to\n   complain.] (O. Eng. Law)\n'
     "   A complainant; a plaintiff.\n   [1913 Webster]\n", ("querent", "A complainant; a plaintiff.")),
    ("Quern@28451468", "Quern \\Quern\\, n. [AS. cweorn, cwyrn; akin to D. kweern, OHG.\n   quirn, Icel. kvern, Sw. "
     "qvarn, Dan. qu[ae]rn, Goth. qairnus\n   (in asiluqa['i]rnus), Lith. q[`i]rnos, and perh. E. corn.]\n"
     "   A mill for grinding grain, the upper stone of which was\n   turned by hand; -- used before the "
     "invention of windmills and\n   watermills. --Shak.\n   [1913 Webster]\n\n         They made him at the "
     "querne grind.       --Chaucer.\n   [1913 Webster]\n",
     ("quern", "A mill for grinding grain, the upper stone of which was turned by hand; -- used before the "
               "invention of windmills and watermills.")),
    ("Solleret@32832053", 'Solleret \\Sol*ler*et"\\, n. [F. soleretim. fr. OF. soler shoe.]\n   A flexible steel '
     "shoe (or one of the plates forming such a\n   shoe), worn with mediaeval armor.\n   [1913 Webster]\n",
     ("solleret", "A flexible steel shoe (or one of the plates forming such a shoe), worn with mediaeval armor.")),
    ("Strepsorhine@34082011", 'Strepsorhine \\Strep"so*rhine\\, a. (Zool.)\n   Having twisted nostrils; -- said of '
     "the lemurs. -- n. (Zool.)\n   One of the Strepsorhina; a lemur. See Illust. under {Monkey}.\n"
     "   [1913 Webster]\n", ("strepsorhine", "Having twisted nostrils; -- said of the lemurs.")),
    ("Threader@35843976", 'Threader \\Thread"er\\, n.\n   1. A device for assisting in threading a needle.\n'
     "      [1913 Webster]\n\n   2. A tool or machine for forming a thread on a screw or in a\n      nut.\n"
     "      [1913 Webster]\n", ("threader", "A device for assisting in threading a needle.")),
    # no item: a cross-reference; the headword inside its definition; sub-senses (a), (b)
    ("Mangan@21544554", 'Mangan \\Man"gan\\, n.\n   See {Mangonel}.\n   [1913 Webster]\n', None),
    ("Hunchback@17177407", 'Hunchback \\Hunch"back`\\, n. [Cf. {Humpback}.]\n   A back with a hunch or hump; also, '
     "a hunchbacked person.\n   [1913 Webster]\n", None),
    ("Inexistence@18193416", 'Inexistence \\In`ex*ist"ence\\, n. [Pref. in- in + existence.]\n   [Obs.]\n'
     "   (a) Inherence; subsistence. --Bp. Hall.\n   (b) That which exists within; a constituent. --A. Tucker.\n"
     "       [1913 Webster]\n", None),
]


def gcide_documents() -> list[dict]:
    return [{"source": "gcide", "id": doc_id, "text": text} for doc_id, text, _ in GCIDE_ENTRIES]


def heldout_documents() -> list[dict]:
    return gcide_documents() + stdlib_documents(*HELDOUT_FILES)


def no_train(source):
    return offline_tasks.words_of_documents([])(source)


# --- a brute-force reference: normalised words as data/clean/hashing.py defines them -------------------

def words(text: str) -> list[str]:
    """Maximal runs of ASCII letters, digits, '_' and non-ASCII characters, ASCII lower-cased."""
    return ["".join(c.lower() if c.isascii() else c for c in run)
            for run in re.findall(r"(?:[A-Za-z0-9_]|[^\x00-\x7f])+", text)]


def brute_force_scan(train_texts: list[str], n: int = 13):
    """occurs(text): whether the text shares an n-gram with one of train_texts or, with fewer than
    n words, appears whole in one; every window of every train text kept in a set of tuples."""
    tokenized = [words(text) for text in train_texts]
    windows = {}

    def occurs(text: str) -> bool:
        ours = words(text)
        size = min(n, len(ours))
        if size not in windows:
            windows[size] = {tuple(theirs[k:k + size]) for theirs in tokenized for k in range(len(theirs) - size + 1)}
        return any(tuple(ours[k:k + size]) in windows[size] for k in range(len(ours) - size + 1))
    return occurs


# --- the candidates of each task -------------------------------------------------------------------------

@pytest.mark.parametrize("doc_id, text, expected", GCIDE_ENTRIES, ids=[e[0].split("@")[0] for e in GCIDE_ENTRIES])
def test_a_gcide_entry_gives_its_headword_and_first_sense(doc_id, text, expected):
    entry = offline_tasks.gcide_entry({"source": "gcide", "id": doc_id, "text": text})
    assert (entry and (entry.headword, entry.definition)) == expected
    if expected:  # the passage checked against train runs from the headword to the end of that sense
        assert text.startswith(entry.passage) and set(words(expected[1])) <= set(words(entry.passage))
        assert "[1913 Webster]" not in entry.passage and "[WordNet" not in entry.passage


def documented_functions(text: str) -> dict:
    """{context: name} of every function with a docstring in a whole module, by ast.walk."""
    import ast
    out = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
            summary = " ".join(ast.get_docstring(node).split("\n\n")[0].split())
            signature = f"({ast.unparse(node.args)})" + (f" -> {ast.unparse(node.returns)}" if node.returns else "")
            dunder = node.name.startswith("__") and node.name.endswith("__")
            named = node.name.lower() in (summary + signature).lower()
            if not dunder and not named and 3 <= len(summary.split()) <= 60:
                out[f"Docstring: {summary}\nSignature: {signature}\nName:"] = node.name
    return out


@pytest.mark.parametrize("name", HELDOUT_FILES + TRAIN_FILES)
def test_docstring_candidates_are_the_functions_that_walking_the_whole_module_finds(name):
    with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
        expected = documented_functions(f.read())
    found = {c.context: c.answer for c in offline_tasks.OFFLINE_TASKS["docstring_name"].candidates(
        [{"source": "python_stdlib", "id": name, "text": open(os.path.join(STDLIB, name)).read()}])}
    # A name found inside a longer word ("get" in "together") keeps the reference from its function;
    # the task drops only whole-word mentions, so it may hold more.
    assert {context: answer.strip() for context, answer in found.items() if context in expected} == expected
    assert len(found) >= len(expected) > 0


PROSE = [  # paragraphs whose last word makes an item
    "The Python documentation is written in reStructuredText, a lightweight markup language that is read "
    "by people and processed by tools into pages of every kind.",
    "Heaps are binary trees for which every parent node has a value less than or equal to any of its "
    "children, and the smallest element is always the root.",
    "# A comment block counts as prose when it reads as prose: its hash marks are taken off before\n"
    "# the paragraph is considered as a whole by the task.",
]
NOT_PROSE = [
    "Too short to be a paragraph worth asking about.",
    "def f(x):\n    return x + 1  # code is no prose even with enough words in it, as here we have",
    "This paragraph has words enough and reads as prose but its last word is a name: see the variable foo_bar.",
    "This paragraph has words enough and reads as prose but its last word is too short to count as one: it is.",
    "    indented paragraphs are dedented first, but this one ends with a number rather than a word 42.",
]


@pytest.mark.parametrize("seed", range(3))
def test_cloze_candidates_are_the_last_words_of_prose_paragraphs(seed):
    rng = np.random.default_rng(seed)
    paragraphs = [*PROSE, *NOT_PROSE]
    order = rng.permutation(len(paragraphs))
    doc = {"source": "python_docs", "id": "x", "text": "\n\n\n".join(paragraphs[i] for i in order)}
    found = offline_tasks.OFFLINE_TASKS["cloze"].candidates([doc])
    expected = [" ".join(paragraphs[i].replace("# ", "").split()) for i in order if i < len(PROSE)]
    assert [c.context + c.answer + "." for c in found] == expected
    assert all(re.fullmatch(r" [A-Za-z][a-z]{2,}", c.answer) for c in found)


# --- building --------------------------------------------------------------------------------------------

def test_every_task_name_builds_through_one_entry_point():
    assert set(offline_tasks.TASK_NAMES) == set(tasks.TASKS) | set(offline_tasks.OFFLINE_TASKS)
    assert offline_tasks.build_task("arithmetic_mc", None, 7, 3) == tasks.arithmetic(7, 3, True)
    with pytest.raises(ValueError, match="unknown task"):
        offline_tasks.build_task("lambada", None, 7, 3)


@pytest.mark.parametrize("name", sorted(offline_tasks.OFFLINE_TASKS))
def test_builds_are_deterministic_whatever_the_documents_order(name):
    heldout, train = heldout_documents(), stdlib_documents(*TRAIN_FILES) + gcide_documents()[:3]
    first = offline_tasks.build(name, heldout, offline_tasks.words_of_documents(train), 12, seed=5)
    rng = np.random.default_rng(0)
    shuffled = offline_tasks.build(name, [heldout[i] for i in rng.permutation(len(heldout))],
                                   offline_tasks.words_of_documents([train[i] for i in rng.permutation(len(train))]),
                                   12, seed=5)
    assert json.dumps(first.items) == json.dumps(shuffled.items) and len(first.items) == 12
    assert first.dropped == shuffled.dropped and first.candidates == shuffled.candidates
    fewer = offline_tasks.build(name, heldout, offline_tasks.words_of_documents(train), 5, seed=5)
    assert fewer.items == first.items[:5]
    other_seed = offline_tasks.build(name, heldout, offline_tasks.words_of_documents(train), 12, seed=6)
    assert other_seed.items != first.items
    for item in first.items:
        tasks.check_item(item, name)
        source, doc_id = item["source"].split(":", 1)
        assert any(d["source"] == source and d["id"] == doc_id for d in heldout)
        if "choices" in item:
            assert len(item["choices"]) == 4 and len({c.lower() for c in item["choices"]}) == 4
    if "choices" in first.items[0]:
        assert first.chance == 0.25 and len({item["gold"] for item in first.items}) > 1
    else:
        assert first.chance == 0.0


def test_gcide_items_are_the_entries_made_into_questions():
    built = offline_tasks.build("gcide_definition", gcide_documents(), no_train, 100, seed=0)
    expected = {f"gcide:{doc_id}": e for doc_id, _, e in GCIDE_ENTRIES if e}
    assert sorted(item["source"] for item in built.items) == sorted(expected)
    for item in built.items:
        headword, definition = expected[item["source"]]
        assert item["context"] == f"Definition: {definition}\nWord:" and item["choices"][item["gold"]] == f" {headword}"
        assert set(item["choices"]) <= {f" {e[0]}" for e in expected.values()}
    reverse = offline_tasks.build("gcide_word", gcide_documents(), no_train, 100, seed=0)
    for item in reverse.items:
        headword, definition = expected[item["source"]]
        assert item["context"] == f"Word: {headword}\nDefinition:" and item["choices"][item["gold"]] == f" {definition}"


# --- decontamination -----------------------------------------------------------------------------------

def test_gcide_items_whose_entry_or_definition_is_in_train_are_dropped():
    by_id = {doc_id: text for doc_id, text, _ in GCIDE_ENTRIES}
    train = [
        {"source": "gcide", "id": "Quern@1", "text": by_id["Quern@28451468"]},  # the whole entry again
        {"source": "gcide", "id": "Plaintiff@2", "text": "Plaintiff \\Plain\"tiff\\, n.\n   One who sues; "
         "a complainant; a plaintiff.\n   [1913 Webster]\n"},  # Querent's short definition, inside another
        {"source": "gcide", "id": "Spade@3", "text": "Spade \\Spade\\, n.\n   A kind of\n   [1913 Webster]\n"},
        {"source": "python_stdlib", "id": "other.py#0", "text": "# " + by_id["Batture@3028939"]},  # another source
    ]
    for name in ("gcide_definition", "gcide_word"):
        clean = offline_tasks.build(name, gcide_documents(), no_train, 100, seed=1)
        built = offline_tasks.build(name, gcide_documents(), offline_tasks.words_of_documents(train), 100, seed=1)
        kept = {item["source"] for item in built.items}
        assert {item["source"] for item in clean.items} - kept == {"gcide:Quern@28451468", "gcide:Querent@28450248"}
        assert built.dropped == {"appears_in_train": 1, "shares_train_ngram": 1}
        assert built.candidates == len(clean.items)
        assert "gcide:Chopness@6112753" in kept and "gcide:Batture@3028939" in kept  # a part; another source
        definitions = {f"gcide:{doc_id}": e[1] for doc_id, _, e in GCIDE_ENTRIES if e}
        occurs = brute_force_scan([doc["text"] for doc in train if doc["source"] == "gcide"])
        assert not any(occurs(definitions[source]) for source in kept)


@pytest.mark.parametrize("seed", range(4))
def test_cloze_items_sharing_a_13_gram_with_train_are_dropped_as_a_brute_force_scan_finds(seed):
    """Random windows of random paragraphs copied into train documents: of 13 words or more into
    the same source (contaminating), of 12 words or into another source (not)."""
    heldout, train = stdlib_documents(*HELDOUT_FILES), stdlib_documents(*TRAIN_FILES)
    rng = np.random.default_rng(seed)
    paragraphs = list(dict.fromkeys(c.context + c.answer for c in offline_tasks.OFFLINE_TASKS["cloze"].candidates(
        sorted(heldout, key=lambda d: d["id"]))))  # a paragraph repeated in the files makes one item
    planted = {}
    for k in rng.choice(len(paragraphs), 8, replace=False):
        ours = paragraphs[k].split()
        size, source = (int(rng.integers(13, 20)), "python_stdlib") if rng.random() < 0.6 else \
            (12, "python_stdlib") if rng.random() < 0.5 else (16, "python_docs")
        start = int(rng.integers(0, max(len(ours) - size, 0) + 1))
        target = train[int(rng.integers(len(TRAIN_FILES)))] if source == "python_stdlib" else None
        window = " ".join(ours[start:start + size])
        if target is None:
            train.append({"source": source, "id": f"planted{k}", "text": window})
        else:
            target["text"] += f"\n\n{window}\n"
        planted[paragraphs[k]] = source == "python_stdlib" and len(words(window)) >= 13
    built = offline_tasks.build("cloze", heldout, offline_tasks.words_of_documents(train), 1000, seed)
    kept = {item["context"] + item["target"] for item in built.items}
    occurs = brute_force_scan([doc["text"] for doc in train if doc["source"] == "python_stdlib"])
    expected = {p for p in paragraphs if not occurs(p)}
    assert kept == expected and built.candidates == len(paragraphs)
    assert sum(built.dropped.values()) == len(paragraphs) - len(expected)
    assert all(paragraph not in kept for paragraph, contaminating in planted.items() if contaminating)
    assert any(contaminating for contaminating in planted.values())


def test_a_docstring_item_is_dropped_when_its_function_is_in_train():
    heldout = stdlib_documents("queue.py")
    clean = offline_tasks.build("docstring_name", heldout, no_train, 100, seed=0)
    victim = clean.items[0]
    doc = next(d for d in heldout if f"python_stdlib:{d['id']}" == victim["source"])
    name = victim["choices"][victim["gold"]].strip()
    function = re.search(rf"\n([ \t]*def {name}\(.*?(\"\"\"|\'\'\').*?\2)", doc["text"], re.DOTALL).group(1)
    train = [{"source": "python_stdlib", "id": "copy.py#0", "text": f"class Copy:\n{function}\n"}]
    built = offline_tasks.build("docstring_name", heldout, offline_tasks.words_of_documents(train), 100, seed=0)
    assert victim["context"] not in {item["context"] for item in built.items}
    assert len(built.items) == len(clean.items) - 1 and sum(built.dropped.values()) == 1


# --- the command line --------------------------------------------------------------------------------

def run_cli(*args):
    import gin
    try:
        return offline_tasks.main(list(args))
    finally:
        gin.clear_config()


def test_the_command_line_refuses_an_existing_file_and_an_unknown_task(tmp_path, capsys):
    out = tmp_path / "task.jsonl"
    out.write_text("kept\n")
    assert run_cli("--task=arithmetic", f"--out={out}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists" in err[0] and out.read_text() == "kept\n"
    assert run_cli("--task=lambada", f"--out={tmp_path / 'new.jsonl'}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lambada" in err[0] and not (tmp_path / "new.jsonl").exists()


def test_the_command_line_writes_a_built_in_task_and_its_chance(tmp_path, capsys):
    out = tmp_path / "task.jsonl"
    assert run_cli("--task=arithmetic_mc", "--items=9", "--seed=4", f"--out={out}") == 0
    assert tasks.read_task(str(out)) == tasks.arithmetic(9, 4, True)
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == 9 and report["chance"] == 0.25 and report["dropped"] == {}


def test_the_command_line_builds_an_offline_task_from_a_corpus_and_caches_its_train_words(tiny_corpus, tmp_path,
                                                                                          capsys):
    from tests.conftest import TINY_MODEL
    bindings = [f"--gin_bindings={b}" for b in tiny_corpus + TINY_MODEL]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert run_cli("--gin_file=base.gin", *bindings, "--task=cloze_mc", "--items=30", f"--out={first}") == 0
    report = json.loads(capsys.readouterr().out)
    items = tasks.read_task(str(first))
    assert report["written"] == len(items) > 0 and report["candidates"] >= len(items) + sum(report["dropped"].values())
    assert report["chance"] == pytest.approx(np.mean([1 / len(item["choices"]) for item in items]))
    data_dir = re.search(r"DataConfig.data_dir = '([^']*)'", " ".join(tiny_corpus)).group(1)
    cached = [name for _, _, names in os.walk(data_dir) for name in names if name.startswith("train_words_")]
    assert cached and all(item["source"].split(":")[0] in offline_tasks.PROSE_SOURCES for item in items)
    assert run_cli("--gin_file=base.gin", *bindings, "--task=cloze_mc", "--items=30", f"--out={second}") == 0
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.slow
def test_evaluation_tasks_scores_an_offline_task_on_a_run(tiny_corpus, tmp_path, capsys):
    from tests.conftest import TINY_MODEL, run_main
    workdir = tmp_path / "run"
    assert run_main(workdir, tiny_corpus + TINY_MODEL + ["TrainConfig.train_steps = 2"]).returncode == 0
    import gin
    try:
        assert tasks.main([f"--workdir={workdir}", "--task=cloze_mc", "--items=6", "--shots=1"]) == 0
    finally:
        gin.clear_config()
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 6 and result["chance"] == 0.25 and 0 <= result["acc"]["mean"] <= 1
