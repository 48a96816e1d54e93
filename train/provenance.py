"""What a run was trained from, recorded in summary.json so that two results can be compared:
fingerprints of the corpus's shards and of the tokenizer, and the code's git revision.

Two runs with equal configs but different fingerprints read different data (a corpus rebuilt from
other installed sources, say) and need not agree; equal fingerprints, revision and config should
give the same losses, bit for bit, on the same machine.
"""
from __future__ import annotations

import hashlib
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_revision() -> str | None:
    """The git commit of this checkout, '+modified' when tracked files differ from it; None outside git."""
    try:
        def git(*args):
            return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=10)
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        modified = git("diff", "--quiet", "HEAD").returncode != 0
        return head.stdout.strip() + ("+modified" if modified else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def fingerprints(corpus_fingerprint: str, tokenizer_path: str, revision: str | None) -> dict:
    """summary.json's provenance fields; `revision` is code_revision() as the run started."""
    with open(tokenizer_path, "rb") as f:
        tokenizer = hashlib.sha256(f.read()).hexdigest()[:16]
    return {"corpus_fingerprint": corpus_fingerprint, "tokenizer_fingerprint": tokenizer,
            "code_revision": revision}
