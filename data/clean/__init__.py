"""Corpus cleaning: mixtures of sources, quality filters, PII scrubbing, dedup and decontamination.

    from data.clean import CleaningPipeline, mix_sources
    pipeline = CleaningPipeline()                       # gin: CleaningPipeline.stages, .workers, ...
    kept = list(pipeline.run(documents, heldout=validation_documents))
    print(pipeline.report.to_text())                    # or .to_json()

Stages, each `@gin.configurable` under its class name (see each module):
    Sanitize             bad input: empty, binary, invalid UTF-8, gigantic lines
    DropGenerated        files that say a program wrote them (off by default)
    StripMarkup          HTML tags, URLs, boilerplate lines
    ScrubPII             e-mail, phone, IP, card numbers -> <EMAIL> <PHONE> <IP> <CARD>
    RemoveRepeatedLines  repeated long lines within a document
    ScriptFilter         mostly non-Latin letters
    GopherRules          Gopher's quality statistics, per-source thresholds
    Decontaminate        shares a 13-gram with held-out text
    ExactDedup           normalised text seen before
    NearDedup            MinHash-LSH Jaccard similarity above a threshold
    PerplexityFilter     word n-gram perplexity in the tail of its source

`python -m data.clean --help` runs the pipeline on the raw sources and prints
the report and the throughput.
"""
from data.clean.decontaminate import Decontaminate
from data.clean.dedup import ExactDedup
from data.clean.generated import DropGenerated
from data.clean.gopher import GopherRules
from data.clean.lines import RemoveRepeatedLines
from data.clean.markup import StripMarkup
from data.clean.minhash import NearDedup
from data.clean.mixture import Mixture, mix_sources
from data.clean.ngram_model import NgramModel
from data.clean.perplexity import PerplexityFilter
from data.clean.pii import ScrubPII
from data.clean.pipeline import CleaningPipeline, default_stages, settings_changed
from data.clean.report import Report
from data.clean.sanitize import Sanitize
from data.clean.script import ScriptFilter

__all__ = ["CleaningPipeline", "Decontaminate", "DropGenerated", "ExactDedup", "GopherRules", "Mixture", "NearDedup",
           "NgramModel", "PerplexityFilter", "RemoveRepeatedLines", "Report", "Sanitize", "ScriptFilter",
           "ScrubPII", "StripMarkup", "default_stages", "mix_sources", "settings_changed"]
