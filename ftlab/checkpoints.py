"""Checkpoints (weights, optimizer, scheduler, step count, loss history) that a killed save cannot corrupt,
and the checks that refuse a resume from a damaged checkpoint or one written by another set-up.

A checkpoint is the layout transformers' Trainer itself resumes from (`resume_from_checkpoint`), written
into a temporary folder and renamed into place (ftlab.results.atomic_dir): weights as safetensors,
optimizer and scheduler state with torch.save (loaded back with weights_only=True by the Trainer), and the
run's TrainConfig (ftlab_config.json).
"""
from __future__ import annotations

import json
import os

import torch

from ftlab.config import TrainConfig
from ftlab.errors import CheckpointError, ConfigError, FtlabError
from ftlab.method_table import METHOD_KNOBS, METHODS
from ftlab.models.loading import _model_key
from ftlab.results import atomic_dir


CHECKPOINT = "checkpoint"  # output_dir/checkpoint: the latest resumable state of a run


RUN_CONFIG = "ftlab_config.json"  # in a checkpoint: the TrainConfig of the run that wrote it


def save_checkpoint(trainer, folder, cfg=None) -> str:
    """Everything needed to resume, atomically: weights (safetensors), optimizer, scheduler, trainer state,
    and (given `cfg`) the run's TrainConfig, so that a resume by another set-up is refused (check_resumable)."""
    with atomic_dir(folder) as tmp:
        trainer.save_model(tmp)  # transformers/peft: safetensors
        if trainer.optimizer is not None:
            torch.save(trainer.optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
        if trainer.lr_scheduler is not None:
            torch.save(trainer.lr_scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
        trainer.state.save_to_json(os.path.join(tmp, "trainer_state.json"))
        if cfg is not None:
            with open(os.path.join(tmp, RUN_CONFIG), "w") as f:
                json.dump({"method": cfg.method, "config": cfg.to_dict()}, f, indent=1)
    return str(folder)


def checkpoint_for(cfg) -> str | None:
    """The run's resumable checkpoint, if one exists (a half-written one never does: atomic_dir), checked with
    check_resumable: a damaged checkpoint or one written by another set-up raises CheckpointError."""
    folder = os.path.join(cfg.output_dir, CHECKPOINT)
    if not os.path.isdir(folder):
        return None
    check_resumable(cfg, folder)
    return folder


# What a resumed run must share with the run that wrote the checkpoint: the weights that train (their
# shapes and what they mean), the optimizer (its saved state), the data (the Trainer skips the batches
# already seen). Batch size, sequence length, learning rate and max_steps may change on a resume.
_RESUME_FIELDS = ("model", "method", "bits", "quant_type", "double_quant", "lora_r", "lora_alpha", "lora_targets",
                  "num_virtual_tokens", "adapter_size", "top_k_layers", "optimizer", "dataset")
_PEFT_TYPES = {m.name: m.peft_type for m in METHODS.values() if m.peft_type}  # method -> peft's adapter type


def _relevant(cfg, name: str) -> bool:
    """Whether a field shapes this run (a method's knobs matter only to it; the 4-bit code only at 4 bits)."""
    if name in ("quant_type", "double_quant"):
        return cfg.effective_bits == 4
    if name in METHOD_KNOBS:
        return name in METHODS[cfg.method].knobs
    return True


def _value(cfg, name: str):
    if name == "bits":
        return cfg.effective_bits
    if name == "model":
        return _model_key(cfg.model)
    if name == "lora_targets":
        return cfg.target_modules
    return getattr(cfg, name)


def check_resumable(cfg, checkpoint) -> str:
    """Refuse a resume that would go wrong: `checkpoint` must be a complete, readable checkpoint (trainer_state.json
    valid JSON with its step and loss history, the weights, the optimizer state) written by a run of the same
    set-up as `cfg` (model, method, bits, the method's knobs, optimizer, dataset). Raises CheckpointError naming
    the field that differs, or the damaged file. Returns the checkpoint folder."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "the TrainConfig of the run to resume")
    folder = _folder_arg(checkpoint, "checkpoint", "the run's output_dir/checkpoint (a Stop writes it)")
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint={folder!r}: no such folder (a Stop writes one to output_dir/{CHECKPOINT}); "
                              "start the run without resume=True.", field="checkpoint")
    holds = sorted(os.listdir(folder))
    _check_trainer_state(folder, holds)
    _check_weights_and_optimizer(folder, holds)
    run_file = os.path.join(folder, RUN_CONFIG)
    if os.path.isfile(run_file):
        _check_same_setup(cfg, folder, _read_run_config(folder, run_file))
    else:  # a checkpoint without the run's config (written before it was saved): what its weights tell
        _check_adapter_writer(cfg, folder)
    return folder


_REDO = "the checkpoint is damaged: start the run again without resume=True (or restore the folder)"
_AGAIN = ("Resume with {field}={saved!r} (as the checkpoint's run), or start afresh: resume=False, or another "
          "output_dir.")


def _check_trainer_state(folder: str, holds: list[str]) -> None:
    """trainer_state.json is there, valid JSON, and holds the step count and the loss history."""
    state_file = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise CheckpointError(f"checkpoint={folder!r}: trainer_state.json is missing (the folder holds "
                              f"{holds[:10] or 'nothing'}); {_REDO}.", field="trainer_state.json")
    try:
        with open(state_file) as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint={folder!r}: trainer_state.json is not valid JSON ({e}); {_REDO}.",
                              field="trainer_state.json") from None
    problem = _state_problem(state)
    if problem:
        raise CheckpointError(f"checkpoint={folder!r}: trainer_state.json is damaged: {problem}; {_REDO}.",
                              field="trainer_state.json")


def _state_problem(state) -> str | None:
    """What is wrong with the Trainer's state object (None if nothing)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not the Trainer's state object"
    if not isinstance(state.get("log_history"), list):
        return "it has no log_history list (the loss curve so far)"
    if not isinstance(state.get("global_step"), int) or isinstance(state.get("global_step"), bool):
        return f"its global_step is {state.get('global_step')!r}, not a step count"
    for i, h in enumerate(state["log_history"]):
        if not isinstance(h, dict) or (("loss" in h or "eval_loss" in h) and not isinstance(h.get("step"), int)):
            return f"log_history entry {i} ({str(h)[:80]}) has no step number"
        for k in ("loss", "eval_loss"):
            if k in h and (isinstance(h[k], bool) or not isinstance(h[k], (int, float))):
                return f"log_history entry {i} has {k}={h[k]!r}, not a number"
    return None


def _check_weights_and_optimizer(folder: str, holds: list[str]) -> None:
    if not any(h.endswith(".safetensors") for h in holds):
        raise CheckpointError(f"checkpoint={folder!r}: no weights (*.safetensors; the folder holds {holds[:10]}); "
                              f"{_REDO}.", field="checkpoint")
    if "optimizer.pt" not in holds:
        raise CheckpointError(f"checkpoint={folder!r}: optimizer.pt is missing, so the optimizer would restart from "
                              f"zero while the step count goes on; {_REDO}.", field="optimizer.pt")


def _read_run_config(folder: str, run_file: str) -> TrainConfig:
    """The TrainConfig of the run that wrote the checkpoint (CheckpointError if its file is damaged)."""
    try:
        with open(run_file) as f:
            return TrainConfig.from_params(json.load(f)["config"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        if isinstance(e, FtlabError):
            msg = str(e)
        else:
            msg = f"{type(e).__name__}: {e}"
        raise CheckpointError(f"checkpoint={folder!r}: {RUN_CONFIG} is damaged ({msg}); {_REDO}.",
                              field=RUN_CONFIG) from None


def _check_same_setup(cfg, folder: str, saved) -> None:
    """Every field a resume must share (_RESUME_FIELDS) is the same in `cfg` as in the checkpoint's run."""
    for name in _RESUME_FIELDS:
        if not (_relevant(cfg, name) or _relevant(saved, name)):
            continue
        mine, theirs = _value(cfg, name), _value(saved, name)
        if mine != theirs:
            shown_theirs = saved.effective_bits if name == "bits" else getattr(saved, name)
            shown_mine = cfg.effective_bits if name == "bits" else getattr(cfg, name)
            raise CheckpointError(f"{name}: the checkpoint in {folder!r} was saved by {name}={shown_theirs!r}; "
                                  f"this run is {name}={shown_mine!r}. "
                                  + _AGAIN.format(field=name, saved=shown_theirs), field=name)


def _check_adapter_writer(cfg, folder: str) -> None:
    """Without the run's config: the peft adapter in the checkpoint (or its absence) must be what `cfg` trains."""
    adapter = os.path.join(folder, "adapter_config.json")
    if os.path.isfile(adapter):
        try:
            with open(adapter) as f:
                acfg = json.load(f)
            saved_type = str(acfg["peft_type"]).upper()
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"checkpoint={folder!r}: adapter_config.json is damaged ({type(e).__name__}: {e}); "
                                  f"{_REDO}.", field="adapter_config.json") from None
        writers = _writers(saved_type, acfg)
        if cfg.method not in writers:
            theirs = " or ".join(writers) or saved_type.lower()
            raise CheckpointError(f"method: the checkpoint in {folder!r} was saved by method={theirs!r} (a "
                                  f"{saved_type} adapter); this run is method={cfg.method!r}. Resume with the "
                                  "checkpoint's method, or start afresh: resume=False, or another output_dir.",
                                  field="method")
        _check_adapter_knobs(cfg, folder, saved_type, acfg)
    elif _PEFT_TYPES.get(cfg.method) is not None:
        own = ", ".join(m.name for m in METHODS.values() if not m.peft_type)
        raise CheckpointError(f"method: the checkpoint in {folder!r} holds no peft adapter (it was saved by a "
                              f"{own} run); this run is "
                              f"method={cfg.method!r}. Resume with the checkpoint's method, or start afresh: "
                              "resume=False, or another output_dir.", field="method")


def _check_adapter_knobs(cfg, folder: str, saved_type: str, acfg: dict) -> None:
    """The knobs a peft adapter_config.json records (rank and alpha; virtual tokens) match `cfg`."""
    checks = []
    if saved_type == "LORA":
        checks = [("lora_r", acfg.get("r"), cfg.lora_r), ("lora_alpha", acfg.get("lora_alpha"), cfg.lora_alpha)]
    elif saved_type in ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"):
        checks = [("num_virtual_tokens", acfg.get("num_virtual_tokens"), cfg.num_virtual_tokens)]
    for name, theirs, mine in checks:
        if theirs is not None and theirs != mine:
            raise CheckpointError(f"{name}: the checkpoint in {folder!r} was saved by {name}={theirs!r}; this run "
                                  f"is {name}={mine!r}. " + _AGAIN.format(field=name, saved=theirs), field=name)


def _writers(saved_type: str, acfg: dict) -> list[str]:
    """The methods that write an adapter of this peft type with these flags (DoRA: LORA with use_dora)."""
    return [m.name for m in METHODS.values() if m.peft_type == saved_type
            and all(bool(acfg.get(k)) == bool(v) for k, v in {**dict.fromkeys(_FLAGS, False), **m.peft_flags}.items())]


_FLAGS = sorted({k for m in METHODS.values() for k in m.peft_flags})  # every flag some row sets


# --- saved runs: does this adapter fit this base? (ftlab.methods.load_trained asks before loading) ---------

def _folder_arg(folder, field: str = "folder", what: str = "the folder save_trained wrote, e.g. finetune's "
                "result.saved_to (output_dir/adapter)") -> str:
    if isinstance(folder, os.PathLike):
        folder = os.fspath(folder)
    if not isinstance(folder, str) or not folder.strip():
        raise ConfigError(field, folder, f"a folder path (str or pathlib.Path): {what}")
    return os.path.expanduser(folder)
