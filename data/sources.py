"""Raw text sources for the default offline corpus.

Each source yields documents, dicts of `source`, `id` and `text` (long files
as sections of at most 16K characters, split at blank lines), in a fixed
order so that the corpus built from them is the same on every machine that has
the same files. A source whose files are absent is skipped with a warning by
the caller; Python's own standard library is always present.

    python_stdlib  the .py files of this interpreter's standard library
    gcide          Debian's dict-gcide: one document per dictionary entry
    python_docs    Debian's python3.x-doc: reStructuredText of the Python docs
    perl_pod       Debian's perl-doc: Perl's manual pages in pod
"""
from __future__ import annotations

import glob
import gzip
import os
import re
import sysconfig
from typing import Callable, Iterator

Document = dict  # {"source": str, "id": str, "text": str}

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


# Long files are split at blank lines into sections of at most this many characters. The
# train/validation split is made by document, and a few huge files (one perl pod is 770 KB)
# would otherwise make the 1% validation split a lottery over whole files.
MAX_SECTION_CHARS = 16_384


def sections(text: str, limit: int = MAX_SECTION_CHARS) -> list[str]:
    """Consecutive pieces of text, cut after blank lines (or line ends, inside a paragraph
    longer than `limit`), each at most `limit` characters unless one line alone is longer;
    joined they give back the text exactly."""
    units = []
    for paragraph in re.split(r"(?<=\n\n)", text):
        units += re.split(r"(?<=\n)", paragraph) if len(paragraph) > limit else [paragraph]
    pieces, current = [], ""
    for paragraph in units:
        if current and len(current) + len(paragraph) > limit:
            pieces.append(current)
            current = ""
        current += paragraph
    return pieces + [current] if current else pieces


def _files_source(name: str, paths: list[str], root: str) -> Iterator[Document]:
    for path in paths:
        text = _read_text(path)
        if not text.strip():
            continue
        for k, section in enumerate(sections(text)):
            yield {"source": name, "id": f"{os.path.relpath(path, root)}#{k}", "text": section}


def _stdlib_paths() -> tuple[list[str], str]:
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Installed third-party packages differ between machines; the corpus must not.
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        paths += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return paths, root


def python_stdlib() -> Iterator[Document]:
    paths, root = _stdlib_paths()
    return _files_source("python_stdlib", paths, root)


_GCIDE = "/usr/share/dictd/gcide"


def _b64_number(s: str) -> int:
    value = 0
    for c in s:
        value = value * 64 + _B64[c]
    return value


def gcide() -> Iterator[Document]:
    """Entries of the dictd database in file order; dictzip files are plain gzip.

    Several index lines (variant spellings) point at one entry: each entry is
    one document, named by its first headword.
    """
    with gzip.open(_GCIDE + ".dict.dz", "rb") as f:
        blob = f.read()
    entries: dict[int, tuple[int, str]] = {}
    with open(_GCIDE + ".index", encoding="utf-8", errors="replace") as index:
        for line in index:
            word, offset, length = line.rstrip("\n").split("\t")[:3]
            start = _b64_number(offset)
            if not word.startswith("00-database") and start not in entries:
                entries[start] = (_b64_number(length), word)
    for start in sorted(entries):
        length, word = entries[start]
        text = blob[start:start + length].decode("utf-8", errors="replace")
        if text.strip():
            yield {"source": "gcide", "id": f"{word}@{start}", "text": text}


def _python_docs_paths() -> tuple[list[str], str]:
    roots = sorted(glob.glob("/usr/share/doc/python3*/html/_sources"))
    if not roots:
        return [], ""
    root = roots[-1]
    return sorted(glob.glob(os.path.join(root, "**", "*.rst.txt"), recursive=True)), root


def python_docs() -> Iterator[Document]:
    paths, root = _python_docs_paths()
    return _files_source("python_docs", paths, root)


def _perl_pod_paths() -> tuple[list[str], str]:
    # Debian links /usr/share/perl/5.36 to 5.36.0: read each directory once, not once per name.
    versions = [path for path in glob.glob("/usr/share/perl/*") if not os.path.islink(path)]
    return sorted(p for version in versions for p in glob.glob(f"{version}/pod/*.pod")), "/usr/share/perl"


def perl_pod() -> Iterator[Document]:
    paths, root = _perl_pod_paths()
    return _files_source("perl_pod", paths, root)


# name -> (documents, whether its files are present, how to get them)
SOURCES: dict[str, tuple[Callable[[], Iterator[Document]], Callable[[], bool], str]] = {
    "python_stdlib": (python_stdlib, lambda: bool(_stdlib_paths()[0]), "always present"),
    "gcide": (gcide, lambda: os.path.exists(_GCIDE + ".dict.dz") and os.path.exists(_GCIDE + ".index"),
              "apt-get install dict-gcide"),
    "python_docs": (python_docs, lambda: bool(_python_docs_paths()[0]), "apt-get install python3.11-doc"),
    "perl_pod": (perl_pod, lambda: bool(_perl_pod_paths()[0]), "apt-get install perl-doc"),
}


def available(names: list[str]) -> tuple[list[str], list[str]]:
    """Splits source names into (present, missing); unknown names raise ValueError."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; known: {sorted(SOURCES)}")
    present = [n for n in names if SOURCES[n][1]()]
    return present, [n for n in names if n not in present]


def iter_documents(name: str) -> Iterator[Document]:
    return SOURCES[name][0]()
