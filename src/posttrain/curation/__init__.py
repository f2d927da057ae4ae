"""Curation: the stages a dataset build applies to its rows before they are written.

PII (regexes always, in ``posttrain.curate``; names and addresses by NER here), near-duplicate
removal, decontamination against eval sets, quality and safety filters, and selection under a
budget. A build names its stages in ``BuildConfig.curate`` (``CurationConfig``); the version's
manifest records what each stage removed (``stats["curation"]``) and ``curation.parquet`` beside
the rows holds the per-row details the report page draws.
"""

from posttrain.curation.config import (
    CurationConfig,
    DecontaminateStage,
    DedupStage,
    PIIStage,
    QualityStage,
    SafetyStage,
    SelectStage,
)

__all__ = [
    "CurationConfig",
    "DecontaminateStage",
    "DedupStage",
    "PIIStage",
    "QualityStage",
    "SafetyStage",
    "SelectStage",
]
