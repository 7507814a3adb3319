"""`load_model`, the only place weights are loaded: a preset, a hub id or a local folder (offline, an embedded
preset's converted folder), on the device and at the bit width asked, every argument checked first."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ftlab.choices import BITS
from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, ModelNotFoundError, check_bool, check_choice
from ftlab.models.checks import (_check_tokenizer_files, _load_error, _not_found, _tokenizer_error,
                                 check_load_arguments, check_loading_info, check_model_name)
from ftlab.models.hub import hub_token, resolve_source
from ftlab.models.presets import find_preset
from ftlab.quant import keep_4bit_trainable, quantization_config

# torch and transformers are imported inside the functions that load: the memory calculator imports
# ftlab.models (for resolve_arch and Arch) and must not load them


def default_device_dtype():
    """CUDA when present (bf16 if supported, else fp16), else CPU with fp32."""
    import torch  # lazy: the calculator imports ftlab.models without torch
    if torch.cuda.is_available():
        return "cuda", (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return "cpu", torch.float32


def load_model(name_or_path: str, *, bits: int = 16, device: str | None = None, dtype=None,
               trust_remote_code: bool = False, for_classification: int | None = None, quant_type: str = "nf4",
               double_quant: bool = True, quant_storage: str | None = None):
    """Load (model, tokenizer). bits=8/4 quantise the frozen base with bitsandbytes (ftlab.quant).

    Every argument is checked before anything is read (ConfigError names it), a local folder before any
    weights load (ModelNotFoundError says what it lacks); a checkpoint that lacks some of the model's weights
    is refused rather than loaded with random ones. Returns the model in eval mode on `device` (default: CUDA
    if present, else CPU) with `model.ftlab_info` = {"source", "load_seconds", "dtype", "device", "bits", ...}.
    """
    a = check_load_arguments(name_or_path, bits=bits, device=device, dtype=dtype,
                             trust_remote_code=trust_remote_code, for_classification=for_classification,
                             quant_type=quant_type, double_quant=double_quant, quant_storage=quant_storage)
    name, bits, remote = a["name"], a["bits"], a["trust_remote_code"]
    preset = find_preset(name, encoders=True)
    if preset is not None and preset.encoder and not a["for_classification"]:
        raise ConfigError("for_classification", for_classification, f"the number of labels with model={name!r}: it "
                          "is an encoder (no language-model head); ftlab.classify.load_classifier(model, num_labels)")
    source = resolve_source(name, trust_remote_code=remote)
    if os.path.isdir(source):
        _check_tokenizer_files(name, Path(source))
    device, dtype, qcfg = _placement(bits, a["device"], a["dtype"], a["quant_type"], a["double_quant"],
                                     a["quant_storage"])
    t0 = time.perf_counter()
    token = hub_token()
    kw = dict(dtype=dtype, trust_remote_code=remote, use_safetensors=True, token=token,
              output_loading_info=True, ignore_mismatched_sizes=True)  # mismatches: refused below, by name
    if qcfg is not None:
        kw.update(quantization_config=qcfg, device_map={"": device})
    tok = _tokenizer(name, source, remote, token)
    model = _from_pretrained(name, source, a["for_classification"], kw)
    _finish(model, tok, device, on_device=qcfg is not None, unpack_4bit=bits == 4 and device == "cpu",
            for_classification=a["for_classification"])
    model.ftlab_info = {"source": source, "load_seconds": time.perf_counter() - t0,
                        "dtype": str(dtype).replace("torch.", ""), "device": device, "bits": bits,
                        "quant_type": a["quant_type"], "double_quant": a["double_quant"],
                        "trust_remote_code": remote}
    return model, tok


def _placement(bits: int, device, dtype, quant_type: str, double_quant: bool, quant_storage: str | None = None):
    """(device, dtype, quantisation config or None) of a load: the defaults filled in where None was asked."""
    import torch  # lazy: the calculator imports ftlab.models without torch
    auto_device, auto_dtype = default_device_dtype()
    device = device or auto_device
    if dtype is None:
        dtype = torch.float32 if bits == 32 or device == "cpu" else auto_dtype
    # 4-bit matmuls dequantise to the compute dtype: bf16 on a GPU; fp32 on a CPU, where bf16 matmuls
    # without AMX are ~10x slower (seen: QLoRA 38 s a step in bf16 on 2 cores)
    compute = torch.float32 if device == "cpu" else (dtype if dtype != torch.float32 else torch.bfloat16)
    storage = getattr(torch, quant_storage) if quant_storage else None
    return device, dtype, quantization_config(bits, compute_dtype=compute, quant_type=quant_type,
                                              double_quant=double_quant, quant_storage=storage)


def _from_pretrained(name: str, source: str, for_classification, kw: dict):
    """The model's from_pretrained(source, **kw), its failures worded as ftlab's; a checkpoint lacking weights
    or holding weights of other shapes refused (check_loading_info)."""
    import torch  # lazy: the calculator imports ftlab.models without torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # lazy: as torch
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
    return model


def _finish(model, tok, device: str, *, on_device: bool, unpack_4bit: bool, for_classification) -> None:
    """Put a loaded model on its device (a quantised one is there already), give the tokenizer a pad token,
    and leave the model in eval mode."""
    if not on_device:
        model.to(device)
    elif unpack_4bit:
        keep_4bit_trainable(model)  # fp32 compute as asked, and a backward that works (see its docstring)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if for_classification and model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """The tokenizer alone (no weights), with a pad token."""
    name = check_model_name(name_or_path)
    trust_remote_code = check_bool("trust_remote_code", trust_remote_code)
    source = resolve_source(name, weights=False, trust_remote_code=trust_remote_code)
    if os.path.isdir(source):
        _check_tokenizer_files(name, Path(source))
    tok = _tokenizer(name, source, trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _tokenizer(name: str, source: str, trust_remote_code: bool, token: str | None = None):
    """AutoTokenizer.from_pretrained(source), its failures worded as ftlab's (which file or folder, what to do)."""
    from transformers import AutoTokenizer  # lazy: the calculator imports ftlab.models without torch
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, token=token)
    except OSError as e:
        raise (_not_found(name, e) if not os.path.isdir(source) else _tokenizer_error(name, source, e)) from None
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, ModelNotFoundError):
            raise
        raise _tokenizer_error(name, source, e) from None


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
        if model is not None:
            import torch  # lazy: the calculator imports ftlab.models without torch
            if isinstance(model, tuple):
                raise ConfigError("model", f"a tuple of {len(model)}", "the model alone: pass model and tokenizer "
                                  "separately: BaseModels(model, tokenizer, name, bits)")
            if not isinstance(model, torch.nn.Module):
                raise ConfigError("model", f"a {type(model).__name__}", "the loaded base model "
                                  "(model, tokenizer = load_for(cfg); BaseModels(model, tokenizer, ...))")
            if tokenizer is None:
                raise ConfigError("tokenizer", None, "the model's tokenizer whenever a model is given "
                                  "(BaseModels(model, tokenizer, name, bits))")
        self._spare = (model, tokenizer) if model is not None else None
        info = getattr(model, "ftlab_info", None) or {}
        if bits is None:
            bits = info.get("bits")
        if bits is not None:
            bits = check_choice("bits", bits, BITS)
        pick = (lambda given, key, default: given if given is not None else info.get(key, default))
        self._key = _base_key(name, bits, pick(quant_type, "quant_type", "nf4"),
                              pick(double_quant, "double_quant", True),
                              pick(trust_remote_code, "trust_remote_code", False))

    def key_for(self, cfg) -> tuple:
        """The key a run of `cfg` needs (the held model serves it when the two are equal)."""
        _check_cfg(cfg, "BaseModels.key_for(cfg)")
        return _base_key(cfg.model, cfg.effective_bits, cfg.quant_type, cfg.double_quant, cfg.trust_remote_code)

    def get(self, cfg):
        """(model, tokenizer) for a run of `cfg`."""
        _check_cfg(cfg, "BaseModels.get(cfg)")
        if self._spare is not None and self._key == self.key_for(cfg):
            spare, self._spare = self._spare, None
            return spare
        self._spare = None  # a different set-up: let the untouched copy go
        return load_for(cfg)


def _check_cfg(cfg, call: str) -> None:
    """A TrainConfig, still valid (a field changed after creation is checked again); ConfigError "cfg" else."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, f"a TrainConfig ({call}; TrainConfig(**params) makes one)")
    cfg.validate()


def load_for(cfg, quant_storage: str | None = None):
    """(model, tokenizer) as a TrainConfig asks: its model, bit width, 4-bit type and remote-code choice.
    quant_storage: the dtype 4-bit weights are packed in ("bfloat16" to shard them with FSDP or ZeRO-3)."""
    _check_cfg(cfg, "load_for(cfg)")
    return load_model(cfg.model, bits=cfg.effective_bits, trust_remote_code=cfg.trust_remote_code,
                      quant_type=cfg.quant_type, double_quant=cfg.double_quant, quant_storage=quant_storage)


def tiny_test_model(vocab_from=None, layers: int = 2, hidden: int = 64):
    """A randomly initialised Llama for unit tests only (never a default): same code paths, instant."""
    from transformers import LlamaConfig, LlamaForCausalLM  # lazy: the calculator imports ftlab.models without torch
    vocab = len(vocab_from) if vocab_from is not None else 512
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)
