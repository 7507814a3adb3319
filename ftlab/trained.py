"""Saving what a method trained and putting it back: `save_trained` writes safetensors only, atomically, with
the run's config and a record of its base beside them; `load_trained` checks the folder fits the base
(ftlab.saved.check_trained) before anything is put on it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import PeftModel, prepare_model_for_kbit_training
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from ftlab.checkpoints import _folder_arg
from ftlab.config import TrainConfig
from ftlab.errors import CheckpointError, ConfigError, FtlabError
from ftlab.method_table import METHODS
from ftlab.methods import apply_method
from ftlab.models import ModelNotFoundError, arch_from_config, check_loading_info
from ftlab.models.checks import _check_folder
from ftlab.results import atomic_dir
from ftlab.saved import base_record, check_applied, check_trained, describe_base


def _trained_tensors(model) -> dict:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_trained(model, folder, cfg, *, state_dict: dict | None = None) -> str:
    """Save what `cfg.method` trained, as safetensors only, atomically (a killed save leaves the old folder).

    peft methods: peft's adapter folder. full: the whole model (transformers' safetensors). BitFit, top-k,
    Houlsby adapters: the trained tensors in `trained.safetensors` plus `ftlab_method.json` with the config.
    state_dict: the tensors to save in place of the model's own ({parameter name: tensor}), when the model holds
    only shards of them (ZeRO-3, FSDP: ftlab.distributed.save_on_main gathers them).
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "the run's TrainConfig (saved beside the weights; load_trained needs it)")
    if isinstance(model, tuple) and model and isinstance(model[0], torch.nn.Module):
        raise ConfigError("model", model, "the trained model alone, not a (model, tokenizer) pair")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("model", model, "the model apply_method returned (and training changed)")
    folder = _folder_arg(folder, what="where to save what the run trained")
    if os.path.isfile(folder):
        raise ConfigError("folder", folder, "a folder (this path is an existing file)")
    check_applied(model, cfg)
    with atomic_dir(folder) as tmp:
        if hasattr(model, "peft_config") or METHODS[cfg.method].saves_whole_model:
            model.save_pretrained(tmp, safe_serialization=True,
                                  **({"state_dict": state_dict} if state_dict is not None else {}))
        else:
            save_file(state_dict if state_dict is not None else _trained_tensors(model),
                      os.path.join(tmp, "trained.safetensors"))
        with open(os.path.join(tmp, "ftlab_method.json"), "w") as f:
            json.dump({"method": cfg.method, "config": cfg.to_dict(), "base": base_record(model)}, f, indent=1)
    return str(folder)


def load_trained(base, folder):
    """The inverse of save_trained: `base` (as load_model returns it) with the trained parameters put back.

    Checked before anything is put on `base` (ftlab.saved.check_trained): the folder is one save_trained wrote,
    and every saved tensor fits the base (an adapter trained on another model is refused with CheckpointError
    naming `folder`, the model it was trained on, the given base and the first tensors that differ)."""
    folder, _saved, cfg = check_trained(base, folder)
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        if getattr(base, "is_quantized", False):  # as in training: norms and embeddings upcast to fp32
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        try:
            return PeftModel.from_pretrained(base, folder)
        except (RuntimeError, ValueError, KeyError) as e:  # what check_trained could not foresee
            if isinstance(e, FtlabError):
                raise
            raise CheckpointError(f"folder={folder!r}: the adapter (trained on model={cfg.model!r}) could not be put "
                                  f"on the given base ({describe_base(base)}): {type(e).__name__}: {str(e)[:300]}. "
                                  "Load a fresh base (this one may be half-changed).", field="folder") from None
    if METHODS[cfg.method].saves_whole_model:
        return _load_whole(base, folder, cfg)
    model = apply_method(base, cfg)
    missing = set(load_file(os.path.join(folder, "trained.safetensors"))) - {n for n, _ in model.named_parameters()}
    if missing:
        raise CheckpointError(f"folder={folder!r}: holds parameters the model lacks, e.g. {sorted(missing)[:3]} "
                              f"(trained on model={cfg.model!r}; the given base is {describe_base(base)})",
                              field="folder")
    model.load_state_dict(load_file(os.path.join(folder, "trained.safetensors"), device=str(base.device)), strict=False)
    return model


def _load_whole(base, folder: str, cfg):
    """A whole saved model (full fine-tuning): `base` only gives the dtype, device and architecture to check."""
    try:
        _check_folder(folder, Path(folder))
        mine = arch_from_config(base.config)
        theirs = arch_from_config(json.loads(open(os.path.join(folder, "config.json")).read()))
    except ModelNotFoundError as e:
        raise CheckpointError(f"folder={folder!r}: the saved model cannot be loaded: {e}", field="folder") from None
    differ = [f"{k}: saved {getattr(theirs, k)} vs base {getattr(mine, k)}"
              for k in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab")
              if getattr(theirs, k) != getattr(mine, k)]
    if differ:
        raise CheckpointError(f"folder={folder!r}: this full fine-tune was trained on model={cfg.model!r}, another "
                              f"architecture than the given base ({describe_base(base)}): {differ[:3]}. Load it "
                              f"with its own base: load_trained(load_model({cfg.model!r})[0], folder).",
                              field="folder")
    model, info = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=base.dtype,
                                                       output_loading_info=True, ignore_mismatched_sizes=True)
    try:
        check_loading_info(folder, folder, info)
    except ModelNotFoundError as e:
        raise CheckpointError(f"folder={folder!r}: the saved model is incomplete: {e}", field="folder") from None
    return model.to(base.device)
