"""What a model argument, a local model folder, a device and a finished load must be, checked before (and
right after) weights are read: each refusal says which file or setting is wrong and how to fix it."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ftlab.choices import BITS, QUANT_TYPES
from ftlab.errors import ConfigError, ModelNotFoundError, check_bool, check_choice, check_int
from ftlab.models.presets import _MODEL_ALLOWED, PRESETS


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
        # lazy: the calculator reads a folder's config.json through here (weights=False) without transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        if model_type not in CONFIG_MAPPING and not ("auto_map" in config and trust_remote_code):
            import transformers  # lazy: as CONFIG_MAPPING above
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
    from safetensors import safe_open  # lazy: only a load reads weights; the calculator needs config.json alone
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


def available_devices() -> list[str]:
    """The device names torch can use here: "cpu", then "cuda" and "cuda:0", ... if present, "mps" if available."""
    import torch  # lazy: the calculator resolves presets through ftlab.models without torch
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
    import torch  # lazy: the calculator resolves presets through ftlab.models without torch
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
    import torch  # lazy: the calculator resolves presets through ftlab.models without torch
    allowed = ("None (float32 on a CPU, bf16/fp16 on a GPU), torch.float32, torch.float16 or torch.bfloat16 "
               "(or their names)")
    if isinstance(dtype, str) and dtype.strip().lower().removeprefix("torch.") in _DTYPES:
        return getattr(torch, _DTYPES[dtype.strip().lower().removeprefix("torch.")])
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float16, torch.bfloat16):
        return dtype
    raise ConfigError(field, dtype, allowed)


def check_load_arguments(name_or_path, *, bits=16, device=None, dtype=None, trust_remote_code=False,
                         for_classification=None, quant_type="nf4", double_quant=True, quant_storage=None) -> dict:
    """load_model's arguments checked and normalised (numpy integers become int, "CUDA" becomes "cuda"):
    ConfigError names the first bad one. Nothing is read from disk."""
    out = dict(name=check_model_name(name_or_path), bits=check_choice("bits", bits, BITS),
               device=check_device(device), dtype=check_dtype(dtype),
               trust_remote_code=check_bool("trust_remote_code", trust_remote_code),
               quant_type=check_choice("quant_type", quant_type, QUANT_TYPES),
               double_quant=check_bool("double_quant", double_quant),
               quant_storage=None if quant_storage is None else check_choice("quant_storage", quant_storage,
                                                                             ("bfloat16", "float16", "float32")))
    if out["quant_storage"] is not None and out["bits"] != 4:
        raise ConfigError("quant_storage", quant_storage, f"None with bits={out['bits']}: only 4-bit weights are "
                          "packed into a storage dtype")
    if for_classification is not None:
        try:
            for_classification = check_int("for_classification", for_classification, 1, 1_000_000)
        except ConfigError:
            raise ConfigError("for_classification", for_classification, "None (a causal LM) or the number of "
                              "labels of a sequence-classification head, an integer ≥ 1 (1: a reward model)"
                              ) from None
    out["for_classification"] = for_classification
    import torch  # lazy: the calculator resolves presets through ftlab.models without torch
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
