"""This sweep's rows with every run's eval loss rescored without the eval split's generated tables.

A handful of long tables (Python's codec maps, encodings/*.py; Perl's Unicode property list, perluniprops)
carry most of the paired variance between neighbouring sizes (../isoflop_cpu_depth/paired_se_by_split.txt):
on them one size can sit a nat per token above its neighbour. This asks whether they also make the
IsoFLOP profiles misfit Approach 3's form. Each run's loss and SE are recomputed from its
eval_documents.json without those documents (1.4% of the tokens here), and written as a results file that
scaling.fit reads like any other; the run directories are not copied, so Approach 1 (which reads training
curves) is left out of that fit.

Needs the 4% corpus built (~/.cache/scalinglm), the split this sweep was scored on.

    python results/isoflop_cpu_6e13/without_tables.py OUT_DIR
    python -m scaling.fit OUT_DIR/results.jsonl --bootstrap 200 --min_budget 1e12 --out OUT_DIR/fits_from_1e12.json
"""
import json
import re
import sys
from pathlib import Path

import numpy as np

from data.corpus import build_corpus
from scaling.eval_precision import load_eval_documents, ratio_se_of_sums

HERE = Path(__file__).parent
TABLES = re.compile(r"python_stdlib:encodings/|perl_pod:.*perluniprops")


def main(out_dir: Path):
    split = build_corpus(validation_percent=4).as_data_source("validation")
    names = [f"{d['source'].decode()}:{d['id'].decode()}" for d in split]
    is_table = np.array([bool(TABLES.match(name)) for name in names])
    print(f"left out: {', '.join(n for n, t in zip(names, is_table) if t)}")
    rows = []
    for line in (HERE / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "final_eval_loss" in row:
            e = load_eval_documents(HERE / row["run"])
            keep = ~is_table[e.doc]
            loss = float(e.nll[keep].sum() / e.weight[keep].sum())
            print(f"{row['run']:>16}  tables {e.weight[~keep].sum() / e.weight.sum():.3f} of the tokens, "
                  f"loss on them {e.nll[~keep].sum() / e.weight[~keep].sum():.3f}; "
                  f"eval loss {row['final_eval_loss']:.4f} -> {loss:.4f}")
            row.update(final_eval_loss=loss, final_eval_loss_se=ratio_se_of_sums(e.nll[keep], e.weight[keep]))
        rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
