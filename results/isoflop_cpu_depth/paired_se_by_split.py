"""Why doubling the eval split cut the paired SE by less than sqrt(2): the same pairs, scored on half of it.

The validation split takes a document when a hash of its source and id falls under validation_percent
(data/corpus.py), so the sixth sweep's 4% split is a subset of this sweep's 8%. Each run's
eval_documents.json has its per-document sums, keyed by the document's index in the 8% split; this script
keeps the documents that are also in the 4% split and recomputes every neighbouring pair's paired SE on
them. The two numbers then differ only in the documents, not in the pairs of sizes, which differ between
the two sweeps. It also prints on how many documents each pair's paired variance rests (n_eff, as
python -m scaling.eval_precision prints it), and names the documents that carry most of it: generated
tables (codec maps, Perl's Unicode property list). Last, the same pairs without those tables, the rule that
../isoflop_cpu_6e13/without_tables.py applies (chosen after seeing which documents carry the variance, so
this is what a split cleaned of such tables would give, not this sweep's eval). Then the same pairs without
every document that the cleaning stage DropGenerated (data/clean/generated.py, StarCoder's rule for files
that say a program wrote them) would remove: what a corpus built with `DropGenerated.enabled = True` would
score, up to the training documents it also removes.

Needs the 8% corpus built (the sweep runner builds it: ~/.cache/scalinglm).

    python results/isoflop_cpu_depth/paired_se_by_split.py > results/isoflop_cpu_depth/paired_se_by_split.txt
"""
import sys
from pathlib import Path

import numpy as np

from data import sources
from data.clean import DropGenerated
from data.corpus import build_corpus, is_validation
from scaling.eval_precision import (effective_documents, heaviest_documents, load_eval_documents, paired_terms,
                                    ratio_difference_se, ratio_se_of_sums)
from scaling.inputs import load_results

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "isoflop_cpu_6e13"))
from without_tables import TABLES  # noqa: E402  (one rule for both sweeps)
SUBSET_PERCENT = 4


def main():
    split = build_corpus(validation_percent=8).as_data_source("validation")
    docs = [{"source": d["source"].decode(), "id": d["id"].decode()} for d in split]
    in_subset = np.array([is_validation(d, SUBSET_PERCENT) for d in docs])
    is_table = np.array([bool(TABLES.match(f"{d['source']}:{d['id']}")) for d in docs])
    is_generated = generated(docs)
    rows = [r for r in load_results(HERE / "results.jsonl") if "final_eval_loss" in r]
    budgets = sorted({r["budget"] for r in rows})
    run_ratios, pair_ratios, full_ses, subset_ses, untabled_ses, untabled_n_eff = [], [], [], [], [], []
    ungenerated_ses, ungenerated_n_eff = [], []
    heavy, n_effs = {}, []
    print(f"8% split: {len(docs)} documents, {in_subset.sum()} of them in the {SUBSET_PERCENT}% split")
    print(f"{'budget':>7} {'run a':>14} {'run b':>14} {'tokens 8%':>10} {'in 4%':>9} {'SE 8%':>8} {'SE 4%':>8} "
          f"{'ratio':>6} {'n_eff':>6} {'no tables':>9} {'n_eff':>6}")
    for budget in budgets:
        runs = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["params_total"])
        evals = [load_eval_documents(HERE / r["run"]) for r in runs]
        for e in evals:
            keep = in_subset[e.doc]
            run_ratios.append(ratio_se_of_sums(e.nll, e.weight) / ratio_se_of_sums(e.nll[keep], e.weight[keep]))
        for ra, a, rb, b in zip(runs, evals, runs[1:], evals[1:]):
            keep = in_subset[a.doc]
            full = ratio_difference_se(a.nll, a.weight, b.nll, b.weight)
            subset = ratio_difference_se(a.nll[keep], a.weight[keep], b.nll[keep], b.weight[keep])
            z = paired_terms(a.nll, a.weight, b.nll, b.weight)
            n_eff = effective_documents(z)
            n_effs.append(n_eff)
            for doc in heaviest_documents(a.doc, z):
                heavy[doc] = heavy.get(doc, 0) + 1
            kept = ~is_table[a.doc]
            untabled = (a.nll[kept], a.weight[kept], b.nll[kept], b.weight[kept])
            untabled_ses.append(ratio_difference_se(*untabled))
            untabled_n_eff.append(effective_documents(paired_terms(*untabled)))
            kept = ~is_generated[a.doc]
            ungenerated = (a.nll[kept], a.weight[kept], b.nll[kept], b.weight[kept])
            ungenerated_ses.append(ratio_difference_se(*ungenerated))
            ungenerated_n_eff.append(effective_documents(paired_terms(*ungenerated)))
            full_ses.append(full), subset_ses.append(subset), pair_ratios.append(full / subset)
            print(f"{budget:7.0e} {ra['run']:>14} {rb['run']:>14} {a.weight.sum():10.3g} {a.weight[keep].sum():9.3g} "
                  f"{full:8.5f} {subset:8.5f} {full / subset:6.3f} {n_eff:6.1f} {untabled_ses[-1]:9.5f} "
                  f"{untabled_n_eff[-1]:6.1f}")
    print(f"median paired SE over {len(full_ses)} pairs: {np.median(full_ses):.5f} on the 8% split, "
          f"{np.median(subset_ses):.5f} on its 4% part")
    print(f"median ratio 8% / 4%: pairs {np.median(pair_ratios):.3f}, single runs {np.median(run_ratios):.3f}; "
          f"1/sqrt(token ratio) would give {np.sqrt(in_subset_tokens(evals[0], in_subset)):.3f}")
    table_share = float(np.median([in_subset_tokens(e, is_table) for e in evals]))
    print(f"without the {is_table.sum()} tables ({table_share:.1%} of the tokens): median paired SE "
          f"{np.median(untabled_ses):.5f}, median n_eff {np.median(untabled_n_eff):.1f} "
          f"(with them {np.median(full_ses):.5f}, n_eff {np.median(n_effs):.1f})")
    generated_share = float(np.median([in_subset_tokens(e, is_generated) for e in evals]))
    print(f"without the {is_generated.sum()} documents of generated files that DropGenerated removes "
          f"({generated_share:.1%} of the tokens; {(is_table & ~is_generated).sum()} of the tables kept): median "
          f"paired SE {np.median(ungenerated_ses):.5f}, median n_eff {np.median(ungenerated_n_eff):.1f}")
    print("documents among a pair's 3 heaviest, by how many pairs:")
    for doc, count in sorted(heavy.items(), key=lambda kv: -kv[1])[:8]:
        tokens = int(evals[0].weight[np.searchsorted(evals[0].doc, doc)])
        print(f"  {count:3d}  {docs[doc]['source']}:{docs[doc]['id']} ({tokens} tokens, "
              f"{'in' if in_subset[doc] else 'not in'} the {SUBSET_PERCENT}% split)")


def generated(docs) -> np.ndarray:
    """Per split document, whether DropGenerated would remove it: judged, as when the corpus is built, by
    its file's first lines, read again from the sources (the split keeps only each section's own text)."""
    stage = DropGenerated(enabled=True)
    wanted = {(d["source"], d["id"]) for d in docs}
    found = {(doc["source"], doc["id"]): bool(stage.marker(doc)) for name in sorted({s for s, _ in wanted})
             for doc in sources.iter_documents(name) if (doc["source"], doc["id"]) in wanted}
    return np.array([found[(d["source"], d["id"])] for d in docs])


def in_subset_tokens(e, in_subset) -> float:
    """The share of the scored tokens in documents that `in_subset` (by document index) marks."""
    return float(e.weight[in_subset[e.doc]].sum() / e.weight.sum())


if __name__ == "__main__":
    main()
