"""Whether what a method trained fits a model: check_applied (the model is what apply_method makes for this
config, before training or a save), check_trained (a saved folder fits the base it is put back on, before
load_trained touches it), and the record of the base that save_trained writes beside the weights.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import asdict

import torch
from peft import PeftConfig, get_peft_model, get_peft_model_state_dict
from safetensors import safe_open

from ftlab.checkpoints import _PEFT_TYPES, _folder_arg
from ftlab.config import TrainConfig
from ftlab.errors import CheckpointError, ConfigError, FtlabError
from ftlab.method_table import METHODS
from ftlab.methods import apply_method
from ftlab.models import arch_from_config


def describe_base(base) -> str:
    """A base model in a few words: its source and the numbers that decide the shapes of what trains on it."""
    c = getattr(base, "config", None)
    name = getattr(base, "name_or_path", "") or getattr(c, "_name_or_path", "") or ""
    text = type(base).__name__ + (f" from {name!r}" if name else "")
    nums = [f"{k} {getattr(c, k)}" for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")
            if getattr(c, k, None) is not None]
    return text + (f" ({', '.join(nums)})" if nums else "")


_ARCH_FIELDS = ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab")


def base_record(model) -> dict:
    """What save_trained notes about the base a run trained on: its name and shape numbers (see _arch_differences)."""
    base = getattr(model, "get_base_model", lambda: model)()
    name = getattr(base, "name_or_path", "") or getattr(getattr(base, "config", None), "_name_or_path", "") or ""
    try:
        arch = {k: v for k, v in asdict(arch_from_config(base.config)).items() if k in _ARCH_FIELDS}
    except Exception:  # a config without the usual numbers: the tensor shapes still get checked
        arch = None
    return {"name_or_path": str(name), "class": type(base).__name__, "arch": arch}


def _arch_text(arch: dict) -> str:
    return ", ".join(f"{k} {arch[k]}" for k in _ARCH_FIELDS if k in arch)


def _arch_differences(recorded, base) -> list[str]:
    """'hidden: trained on 64, base 32' for each shape number that differs (none if either side is unknown)."""
    if not isinstance(recorded, dict):
        return []
    try:
        mine = arch_from_config(base.config)
    except Exception:
        return []
    return [f"{k}: trained on {recorded[k]}, base {getattr(mine, k)}" for k in _ARCH_FIELDS
            if k in recorded and recorded[k] != getattr(mine, k)]


def check_applied(model, cfg) -> None:
    """The model a run of `cfg` trains must be what apply_method(base, cfg) makes: a peft model for the peft
    methods, a plain one with trainable parameters for the others. ConfigError otherwise (finetune with
    apply=False can ask this before training, save_trained asks it before saving)."""
    method = METHODS[cfg.method]
    peft = hasattr(model, "peft_config")
    if method.peft_config is not None and not peft:
        raise ConfigError("model", type(model).__name__, f"the model apply_method(base, cfg) returned: "
                          f"method={cfg.method!r} trains a peft adapter, and this model has none (was it applied?)")
    if method.peft_config is None and peft:
        raise ConfigError("method", cfg.method, "the method that made this model: it carries a peft adapter "
                          f"({', '.join(sorted(_PEFT_TYPES))} make one)")
    if peft:
        kinds = {str(getattr(c, "peft_type", "")).rsplit(".", 1)[-1].upper() for c in model.peft_config.values()}
        want = _PEFT_TYPES[cfg.method]
        if want not in kinds:
            made = sorted(m for m, t in _PEFT_TYPES.items() if t in kinds)
            raise ConfigError("method", cfg.method, f"the method that made this model: it carries a "
                              f"{'/'.join(sorted(kinds))} adapter (method {' or '.join(made) or '?'})")
    if not method.saves_whole_model and not peft and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model", type(model).__name__, f"a model with trained parameters: nothing in it is "
                          f"trainable, so there is nothing to train or save for method={cfg.method!r}")


def _shapes(path: str, folder: str, field: str = "folder") -> dict:
    """{name: shape} from a safetensors file's header (no tensor is read)."""
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{field}={folder!r}: {os.path.basename(path)} is damaged (its header cannot be read: "
                              f"{str(e)[:200]}); save the run again.", field=field) from None


def _shadow(base):
    """An empty copy of `base` on the meta device (no memory, no weights): to build what a method adds to it."""
    with torch.device("meta"):
        return type(base)(copy.deepcopy(base.config))


def _expected_shapes(base, cfg, folder: str) -> dict | None:
    """{name: shape} the saved tensors must have to fit `base`, built on an empty copy; None if no copy can be made
    (a model class that cannot be built from its config alone): then the load itself has the last word."""
    try:
        shadow = _shadow(base)
    except Exception:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if os.path.exists(os.path.join(folder, "adapter_config.json")):
            try:
                pcfg = PeftConfig.from_pretrained(folder)
            except Exception as e:
                raise CheckpointError(f"folder={folder!r}: adapter_config.json cannot be read ({type(e).__name__}: "
                                      f"{str(e)[:200]}); save the run again.", field="folder") from None
            if getattr(pcfg, "prompt_tuning_init", None) is not None:
                pcfg.prompt_tuning_init = "RANDOM"  # shapes only: no need for the init text's tokenizer
            for k in ("token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules"):
                if hasattr(pcfg, k):  # soft prompts: saved from the training base; here from the given one
                    setattr(pcfg, k, None)
            pcfg.inference_mode = True
            try:
                model = get_peft_model(shadow, pcfg)
            except ValueError as e:  # e.g. target modules the base does not have
                return {"__error__": f"peft cannot put this adapter on the base: {str(e)[:300]}"}
            except Exception:
                return None
            return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
        try:
            model = apply_method(shadow, cfg)
        except ValueError as e:  # bitfit on a base without biases, top_k beyond its blocks, ...
            return {"__error__": str(e)[:300]}
        except Exception:
            return None
        return {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}


def check_trained(base, folder) -> tuple[str, dict, object]:
    """Everything load_trained needs, checked before anything is put on `base`: the folder exists and is one
    save_trained wrote (ftlab_method.json, the weights), and what it holds fits `base` tensor by tensor. Returns
    (folder, saved ftlab_method.json, TrainConfig). Raises CheckpointError (field "folder" or "base")."""
    folder = _folder_arg(folder)
    _check_base(base)
    holds = _saved_folder(folder)
    saved, cfg = _read_method_file(folder, holds)
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        weights = os.path.join(folder, "adapter_model.safetensors")
    elif METHODS[cfg.method].saves_whole_model:
        return folder, saved, cfg  # a whole model: load_trained checks its config and weights as load_model does
    else:
        weights = os.path.join(folder, "trained.safetensors")
    if not os.path.isfile(weights):
        raise CheckpointError(f"folder={folder!r}: {os.path.basename(weights)} is missing (it holds {holds[:10]}); "
                              "the save is incomplete: save the run again.", field="folder")
    _check_fits(base, folder, saved, cfg, weights)
    return folder, saved, cfg


def _check_base(base) -> None:
    """`base` is a fresh transformers model: not a (model, tokenizer) pair, not one that carries an adapter."""
    if isinstance(base, tuple) and base and isinstance(base[0], torch.nn.Module):
        raise ConfigError("base", base, "the model alone: load_model returns (model, tokenizer), so pass "
                          "load_model(...)[0]")
    if not isinstance(base, torch.nn.Module) or getattr(base, "config", None) is None:
        raise ConfigError("base", base, "the base model as load_model returns it (a transformers model)")
    if hasattr(base, "peft_config"):
        raise CheckpointError("base: this model already carries a peft adapter; pass a fresh base from "
                              "load_model(...)[0] (load_trained puts the saved adapter on it)", field="base")


def _saved_folder(folder: str) -> list[str]:
    """What the folder holds (sorted names); CheckpointError if it is missing or a file."""
    if not os.path.exists(folder):
        raise CheckpointError(f"folder={folder!r}: no such folder. Pass the folder save_trained wrote, e.g. "
                              "finetune's result.saved_to (output_dir/adapter).", field="folder")
    if not os.path.isdir(folder):
        raise CheckpointError(f"folder={folder!r} is a file; pass the folder save_trained wrote (it holds "
                              "ftlab_method.json and the weights).", field="folder")
    return sorted(os.listdir(folder))


def _read_method_file(folder: str, holds: list[str]) -> tuple[dict, TrainConfig]:
    """ftlab_method.json as save_trained wrote it, and the TrainConfig it holds."""
    meta = os.path.join(folder, "ftlab_method.json")
    if not os.path.isfile(meta):
        hint = (" A peft adapter saved elsewhere loads with peft.PeftModel.from_pretrained(base, folder)."
                if "adapter_config.json" in holds else "")
        raise CheckpointError(f"folder={folder!r}: no ftlab_method.json, so this is not a folder save_trained wrote "
                              f"(it holds {holds[:10] or 'nothing'}). finetune saves the trained weights to "
                              f"output_dir/adapter.{hint}", field="folder")
    try:
        with open(meta) as f:
            saved = json.load(f)
        config = saved["config"]
        if not isinstance(config, dict) or not isinstance(saved.get("method"), str):
            raise TypeError("config must be a JSON object and method a string")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"folder={folder!r}: ftlab_method.json is damaged ({type(e).__name__}: {e}); it must "
                              "hold {\"method\": ..., \"config\": {...}} as save_trained writes it.",
                              field="folder") from None
    try:
        cfg = TrainConfig.from_params({k: v for k, v in config.items()})
    except FtlabError as e:
        raise CheckpointError(f"folder={folder!r}: the config in ftlab_method.json is not valid ({e})",
                              field="folder") from None
    return saved, cfg


def _check_fits(base, folder: str, saved: dict, cfg, weights: str) -> None:
    """Every saved tensor fits `base` (shapes built on an empty copy of it), and the recorded architecture is its."""
    trained_on = f"this {cfg.method} run was trained on model={cfg.model!r}"
    have = _shapes(weights, folder)
    want = _expected_shapes(base, cfg, folder)
    fix = f" Load it onto that base: load_trained(load_model({cfg.model!r})[0], folder)."
    recorded = saved.get("base") if isinstance(saved.get("base"), dict) else {}
    if recorded.get("arch"):
        trained_on += f" ({_arch_text(recorded['arch'])})"
    arch_differs = _arch_differences(recorded.get("arch"), base)
    if want is None:
        want = {}
        if not arch_differs:
            return
    if "__error__" in want:
        raise CheckpointError(f"folder={folder!r}: {trained_on}; it does not fit the given base "
                              f"({describe_base(base)}): {want['__error__']}.{fix}", field="folder")
    wrong = [f"{k}: saved {list(s)} vs base {list(want[k])}" for k, s in have.items() if k in want and want[k] != s]
    extra = sorted(set(have) - set(want))
    absent = sorted(set(want) - set(have))
    if wrong or extra or absent or arch_differs:
        parts = [f"the architectures differ: {arch_differs[:3]}"] if arch_differs else []
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) of other shapes, first {wrong[:3]}")
        if extra:
            parts.append(f"{len(extra)} saved tensor(s) the base has no place for, e.g. {extra[:3]}")
        if absent:
            parts.append(f"{len(absent)} tensor(s) the method needs that the folder lacks, e.g. {absent[:3]}")
        raise CheckpointError(f"folder={folder!r}: {trained_on}; it does not fit the given base "
                              f"({describe_base(base)}): {'; '.join(parts)}.{fix}", field="folder")
