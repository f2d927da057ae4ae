"""The tiny-model factory: a char-level chat tokenizer and a small random causal LM, built from scratch.

Tests, demos and benchmarks use these instead of downloading a model: a Qwen2 (or Llama) with
hidden 128 and 4 layers has under a million parameters and trains in seconds on a CPU. The
folder is an ordinary Hugging Face checkpoint, so every loading path in posttrain is the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from posttrain.errors import Conflict, InvalidInput
from posttrain.project import Project
from posttrain.records import ModelRecord

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

Arch = Literal["qwen2", "llama"]

SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
ROLE_WORDS = ["system", "user", "assistant"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MAX_POSITIONS = 512


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Return the char-level chat tokenizer (ChatML-like template, eos ``<|im_end|>``, left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # One token per byte, spelled the byte-level way (space is "Ġ"): every text tokenizes, and
    # AutoTokenizer's Qwen2Tokenizer, which forces a byte-level pipeline on qwen2 folders, reads it right.
    chars = list(pre_tokenizers.ByteLevel.alphabet())
    chars.sort(key=ord)
    vocab = {token: i for i, token in enumerate(SPECIALS + ROLE_WORDS + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.add_tokens(ROLE_WORDS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )


def _config(arch: Arch, vocab_size: int, ids: dict[str, int], hidden: int, layers: int, heads: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    if hidden % heads:
        raise InvalidInput(f"hidden ({hidden}) must be a multiple of heads ({heads})", field="hidden")
    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    return config_class(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=3 * hidden,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        **ids,
    )


def build_tiny_model(
    path: Path,
    *,
    arch: Arch = "qwen2",
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Write a random tiny causal LM with its tokenizer and chat template to ``path``; return ``path``.

    The same arguments give the same weights (byte for byte). ``path`` must not hold a model already.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ("qwen2", "llama"):
        raise InvalidInput(f"unknown arch {arch!r}; use 'qwen2' or 'llama'", field="arch")
    path = Path(path)
    if (path / "config.json").exists():
        raise Conflict(f"{path} already holds a model; choose another folder")
    tokenizer = build_tokenizer()
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = _config(arch, len(tokenizer), ids, hidden, layers, heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**ids)
    path.mkdir(parents=True, exist_ok=True)
    transformers.utils.logging.disable_progress_bar()  # a 1-shard "Writing model shards" bar is noise
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def init_tiny(
    project: Project,
    name: str,
    *,
    arch: Arch = "qwen2",
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    seed: int = 0,
) -> ModelRecord:
    """Build a tiny model into the project's artifacts and register it as ``name``."""
    from posttrain.models.registry import check_name_free, register_model

    check_name_free(project, name)
    folder = project.artifacts / "models" / name
    build_tiny_model(folder, arch=arch, hidden=hidden, layers=layers, heads=heads, seed=seed)
    recipe = {"factory": "tiny", "arch": arch, "hidden": hidden, "layers": layers, "heads": heads, "seed": seed}
    return register_model(project, name, folder, recipe=recipe, description=f"tiny random {arch}")
