"""What keeps a run from losing work: out-of-memory and non-finite losses caught with a message that
says what to do, the last good weights kept, and checkpoints (weights, optimizer, scheduler, step
count, loss history) that a killed save cannot corrupt.

A checkpoint is the layout transformers' Trainer itself resumes from (`resume_from_checkpoint`), written
into a temporary folder and renamed into place (ftlab.results.atomic_dir): weights as safetensors,
optimizer and scheduler state with torch.save (loaded back with weights_only=True by the Trainer), and the
run's TrainConfig (ftlab_config.json). check_resumable refuses a resume from a damaged checkpoint or one written
by another set-up; check_trained refuses to put a saved adapter on a base it does not fit (load_trained).
"""
from __future__ import annotations

import math
import os

from transformers import TrainerCallback

CHECKPOINT = "checkpoint"  # output_dir/checkpoint: the latest resumable state of a run


class TrainingFailed(RuntimeError):
    """A run ended early for a reason the user must act on. `.result` is the TrainResult so far (its
    `saved_to` says where the last good weights are). IPython shows the message only, no traceback."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result

    def _render_traceback_(self):
        return [f"⚠ {type(self).__name__}: {self}"]


class OutOfMemory(TrainingFailed):
    pass


class NonFiniteLoss(TrainingFailed):
    pass


def oom_message(cfg, error: BaseException) -> str:
    """The estimate, what was free, and the cheapest fixes first (each with what it saves, from the calculator)."""
    import torch
    free = ""
    if torch.cuda.is_available():
        f, total = torch.cuda.mem_get_info()
        free = f" The GPU had {f / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB when it failed."
    try:
        est = cfg.memory_estimate()
        head = f"Out of memory: this set-up needs about {est.total_gib:.1f} GiB (ftlab's estimate).{free}"
    except Exception:  # an unknown model offline: still give the fixes
        head = f"Out of memory.{free}"
    fixes = []
    from dataclasses import replace

    from ftlab.errors import ConfigError
    for label, change in (("gradient_checkpointing=True", dict(gradient_checkpointing=True)),
                          (f"batch_size={max(1, cfg.batch_size // 2)}", dict(batch_size=max(1, cfg.batch_size // 2))),
                          ("bits=4 with method='qlora'", dict(method="qlora", bits=4)),
                          (f"seq_len={max(8, cfg.seq_len // 2)}", dict(seq_len=max(8, cfg.seq_len // 2)))):
        if all(getattr(cfg, k) == v for k, v in change.items()):
            continue  # already so
        try:
            changed = replace(cfg, **change)
        except ConfigError:  # this fix makes a set-up the config refuses (prefix tuning with gradient
            continue         # checkpointing, say): never suggest it
        try:
            fixes.append(f"{label} (→ {changed.memory_estimate().total_gib:.1f} GiB)")
        except Exception:  # the estimate alone failed (an unknown model offline): the fix still stands
            fixes.append(label)
    tried = (f" Cheapest fixes first: {'; '.join(fixes)}." if fixes else
             " ftlab knows no cheaper set-up of this run: use a smaller model or a GPU with more memory.")
    return f"{head}{tried} ({type(error).__name__}: {str(error)[:200]})"


def free_memory() -> None:
    """Give cached GPU memory back after a failure, so the next cell (or run) starts clean."""
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class GoodWeights(TrainerCallback):
    """Stops the run at a non-finite loss and puts back the weights that gave the last finite one.

    The loss of step k is computed with the weights from before step k. When it is nan/inf, those weights
    (the result of update k-1) are suspect; the weights from before step k-1 gave a finite loss, so they
    are the last known good. Two copies are kept, alternating, 4 bytes a trainable parameter each (on the
    CPU: a GPU run's memory is untouched). Above `max_params` trainable parameters (a full fine-tune of a
    large model) no copy is kept and the message says so."""

    def __init__(self, max_params: int = 200_000_000):
        self.max_params = max_params
        self.params, self.copies, self.taken, self.stream = [], None, {}, None
        self.bad_step: int | None = None
        self.good_step: int | None = None   # the step whose (finite) loss the restored weights gave

    def on_train_begin(self, args, state, control, model=None, **kw):
        import torch
        self.params = [p for p in model.parameters() if p.requires_grad]
        if sum(p.numel() for p in self.params) <= self.max_params:
            on_gpu = any(p.is_cuda for p in self.params)
            self.copies = [[torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=on_gpu) for p in self.params]
                           for _ in range(2)]
            # On a GPU the copy runs on its own stream, overlapping the forward and backward (which only read
            # the weights); the optimizer step waits for it (on_pre_optimizer_step). Measured on an H100 with it
            # (scripts/bench_throughput.py --ablate): bare TRL + this guard 1.05x (full) / 1.03x (LoRA) bare TRL.
            self.stream = torch.cuda.Stream() if on_gpu else None

    def on_step_begin(self, args, state, control, **kw):
        step = state.global_step + 1  # the step about to run
        if self.copies is None or self.bad_step is not None:
            return
        if self.stream is None:
            for c, p in zip(self.copies[step % 2], self.params):
                c.copy_(p.detach())
        else:
            import torch
            self.stream.wait_stream(torch.cuda.current_stream())  # the weights as the last update left them
            with torch.cuda.stream(self.stream):
                for c, p in zip(self.copies[step % 2], self.params):
                    c.copy_(p.detach(), non_blocking=True)
        self.taken[step % 2] = step

    def on_pre_optimizer_step(self, args, state, control, **kw):
        if self.stream is not None and self.copies is not None:
            import torch
            torch.cuda.current_stream().wait_stream(self.stream)  # don't update weights still being copied

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss) or self.bad_step is not None:
            return
        k = self.bad_step = state.global_step
        control.should_training_stop = True
        good = k - 1 if self.taken.get((k - 1) % 2) == k - 1 else None
        if self.copies is not None and good is not None:
            import torch
            if self.stream is not None:
                self.stream.synchronize()
            with torch.no_grad():
                for c, p in zip(self.copies[good % 2], self.params):
                    p.copy_(c.to(p.device))
            self.good_step = good

    def message(self, cfg) -> str:
        kept = (f"the weights that gave the last finite loss (step {self.good_step}) are put back"
                if self.good_step is not None else
                "the weights could not be put back (no earlier step, or too many trainable parameters to copy)")
        return (f"The training loss became non-finite (nan or inf) at step {self.bad_step}; the run stopped and "
                f"{kept}. Usual causes, most likely first: learning_rate={cfg.learning_rate:g} too high (try "
                f"{cfg.learning_rate / 10:g}), fp16 overflow (use bf16 or bits=32), bad examples in the data.")


RUN_CONFIG = "ftlab_config.json"  # in a checkpoint: the TrainConfig of the run that wrote it


def save_checkpoint(trainer, folder, cfg=None) -> str:
    """Everything needed to resume, atomically: weights (safetensors), optimizer, scheduler, trainer state,
    and (given `cfg`) the run's TrainConfig, so that a resume by another set-up is refused (check_resumable)."""
    import json

    import torch

    from ftlab.results import atomic_dir
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
_PEFT_TYPES = {"lora": "LORA", "dora": "LORA", "qlora": "LORA", "ia3": "IA3", "prompt_tuning": "PROMPT_TUNING",
               "prefix_tuning": "PREFIX_TUNING", "p_tuning": "P_TUNING", "ln_tuning": "LN_TUNING"}


def _relevant(cfg, name: str) -> bool:
    """Whether a field shapes this run (a method's knobs matter only to it; the 4-bit code only at 4 bits)."""
    from ftlab.methods import METHODS, METHOD_KNOBS
    if name in ("quant_type", "double_quant"):
        return cfg.effective_bits == 4
    if name in METHOD_KNOBS:
        return name in METHODS[cfg.method].knobs
    return True


def _value(cfg, name: str):
    if name == "bits":
        return cfg.effective_bits
    if name == "model":
        from ftlab.models import _model_key
        return _model_key(cfg.model)
    if name == "lora_targets":
        return cfg.target_modules
    return getattr(cfg, name)


def check_resumable(cfg, checkpoint) -> str:
    """Refuse a resume that would go wrong: `checkpoint` must be a complete, readable checkpoint (trainer_state.json
    valid JSON with its step and loss history, the weights, the optimizer state) written by a run of the same
    set-up as `cfg` (model, method, bits, the method's knobs, optimizer, dataset). Raises CheckpointError naming
    the field that differs, or the damaged file. Returns the checkpoint folder."""
    import json

    from ftlab.config import TrainConfig
    from ftlab.errors import CheckpointError, ConfigError, FtlabError
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "the TrainConfig of the run to resume")
    folder = _folder_arg(checkpoint, "checkpoint", "the run's output_dir/checkpoint (a Stop writes it)")
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint={folder!r}: no such folder (a Stop writes one to output_dir/{CHECKPOINT}); "
                              "start the run without resume=True.", field="checkpoint")
    holds = sorted(os.listdir(folder))
    redo = "the checkpoint is damaged: start the run again without resume=True (or restore the folder)"
    state_file = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise CheckpointError(f"checkpoint={folder!r}: trainer_state.json is missing (the folder holds "
                              f"{holds[:10] or 'nothing'}); {redo}.", field="trainer_state.json")
    try:
        with open(state_file) as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint={folder!r}: trainer_state.json is not valid JSON ({e}); {redo}.",
                              field="trainer_state.json") from None
    problem = None
    if not isinstance(state, dict):
        problem = f"it holds a {type(state).__name__}, not the Trainer's state object"
    elif not isinstance(state.get("log_history"), list):
        problem = "it has no log_history list (the loss curve so far)"
    elif not isinstance(state.get("global_step"), int) or isinstance(state.get("global_step"), bool):
        problem = f"its global_step is {state.get('global_step')!r}, not a step count"
    else:
        for i, h in enumerate(state["log_history"]):
            if not isinstance(h, dict) or (("loss" in h or "eval_loss" in h) and not isinstance(h.get("step"), int)):
                problem = f"log_history entry {i} ({str(h)[:80]}) has no step number"
                break
            for k in ("loss", "eval_loss"):
                if k in h and (isinstance(h[k], bool) or not isinstance(h[k], (int, float))):
                    problem = f"log_history entry {i} has {k}={h[k]!r}, not a number"
                    break
            if problem:
                break
    if problem:
        raise CheckpointError(f"checkpoint={folder!r}: trainer_state.json is damaged: {problem}; {redo}.",
                              field="trainer_state.json")
    if not any(h.endswith(".safetensors") for h in holds):
        raise CheckpointError(f"checkpoint={folder!r}: no weights (*.safetensors; the folder holds {holds[:10]}); "
                              f"{redo}.", field="checkpoint")
    if "optimizer.pt" not in holds:
        raise CheckpointError(f"checkpoint={folder!r}: optimizer.pt is missing, so the optimizer would restart from "
                              f"zero while the step count goes on; {redo}.", field="optimizer.pt")
    again = ("Resume with {field}={saved!r} (as the checkpoint's run), or start afresh: resume=False, or another "
             "output_dir.")
    run_file = os.path.join(folder, RUN_CONFIG)
    if os.path.isfile(run_file):
        try:
            with open(run_file) as f:
                saved = TrainConfig.from_params(json.load(f)["config"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            if isinstance(e, FtlabError):
                msg = str(e)
            else:
                msg = f"{type(e).__name__}: {e}"
            raise CheckpointError(f"checkpoint={folder!r}: {RUN_CONFIG} is damaged ({msg}); {redo}.",
                                  field=RUN_CONFIG) from None
        for name in _RESUME_FIELDS:
            if not (_relevant(cfg, name) or _relevant(saved, name)):
                continue
            mine, theirs = _value(cfg, name), _value(saved, name)
            if mine != theirs:
                shown_theirs = saved.effective_bits if name == "bits" else getattr(saved, name)
                shown_mine = cfg.effective_bits if name == "bits" else getattr(cfg, name)
                raise CheckpointError(f"{name}: the checkpoint in {folder!r} was saved by {name}={shown_theirs!r}; "
                                      f"this run is {name}={shown_mine!r}. "
                                      + again.format(field=name, saved=shown_theirs), field=name)
        return folder
    # a checkpoint without the run's config (written before it was saved): what its weights tell
    adapter = os.path.join(folder, "adapter_config.json")
    peft_type = _PEFT_TYPES.get(cfg.method)
    if os.path.isfile(adapter):
        try:
            with open(adapter) as f:
                acfg = json.load(f)
            saved_type = str(acfg["peft_type"]).upper()
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"checkpoint={folder!r}: adapter_config.json is damaged ({type(e).__name__}: {e}); "
                                  f"{redo}.", field="adapter_config.json") from None
        names = [m for m, t in _PEFT_TYPES.items() if t == saved_type]
        if peft_type != saved_type or (saved_type == "LORA" and bool(acfg.get("use_dora")) != (cfg.method == "dora")):
            if saved_type == "LORA":
                theirs = "dora" if acfg.get("use_dora") else "lora or qlora"
            else:
                theirs = " or ".join(names) or saved_type.lower()
            raise CheckpointError(f"method: the checkpoint in {folder!r} was saved by method={theirs!r} (a "
                                  f"{saved_type} adapter); this run is method={cfg.method!r}. Resume with the "
                                  "checkpoint's method, or start afresh: resume=False, or another output_dir.",
                                  field="method")
        checks = []
        if saved_type == "LORA":
            checks = [("lora_r", acfg.get("r"), cfg.lora_r), ("lora_alpha", acfg.get("lora_alpha"), cfg.lora_alpha)]
        elif saved_type in ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"):
            checks = [("num_virtual_tokens", acfg.get("num_virtual_tokens"), cfg.num_virtual_tokens)]
        for name, theirs, mine in checks:
            if theirs is not None and theirs != mine:
                raise CheckpointError(f"{name}: the checkpoint in {folder!r} was saved by {name}={theirs!r}; this run "
                                      f"is {name}={mine!r}. " + again.format(field=name, saved=theirs), field=name)
    elif peft_type is not None:
        raise CheckpointError(f"method: the checkpoint in {folder!r} holds no peft adapter (it was saved by a "
                              "full, bitfit, top_k or adapter run); this run is "
                              f"method={cfg.method!r}. Resume with the checkpoint's method, or start afresh: "
                              "resume=False, or another output_dir.", field="method")
    return folder


# --- saved runs: does this adapter fit this base? (ftlab.methods.load_trained asks before loading) ---------

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
    from dataclasses import asdict

    from ftlab.models import arch_from_config
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
    from ftlab.models import arch_from_config
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
    from ftlab.errors import ConfigError
    from ftlab.methods import METHODS
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
    if method.name != "full" and not peft and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("model", type(model).__name__, f"a model with trained parameters: nothing in it is "
                          f"trainable, so there is nothing to train or save for method={cfg.method!r}")


def _folder_arg(folder, field: str = "folder", what: str = "the folder save_trained wrote, e.g. finetune's "
                "result.saved_to (output_dir/adapter)") -> str:
    from ftlab.errors import ConfigError
    if isinstance(folder, os.PathLike):
        folder = os.fspath(folder)
    if not isinstance(folder, str) or not folder.strip():
        raise ConfigError(field, folder, f"a folder path (str or pathlib.Path): {what}")
    return os.path.expanduser(folder)


def _shapes(path: str, folder: str, field: str = "folder") -> dict:
    """{name: shape} from a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    from ftlab.errors import CheckpointError
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{field}={folder!r}: {os.path.basename(path)} is damaged (its header cannot be read: "
                              f"{str(e)[:200]}); save the run again.", field=field) from None


def _shadow(base):
    """An empty copy of `base` on the meta device (no memory, no weights): to build what a method adds to it."""
    import copy

    import torch
    with torch.device("meta"):
        return type(base)(copy.deepcopy(base.config))


def _expected_shapes(base, cfg, folder: str) -> dict | None:
    """{name: shape} the saved tensors must have to fit `base`, built on an empty copy; None if no copy can be made
    (a model class that cannot be built from its config alone): then the load itself has the last word."""
    import warnings

    from ftlab.errors import CheckpointError
    try:
        shadow = _shadow(base)
    except Exception:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if os.path.exists(os.path.join(folder, "adapter_config.json")):
            from peft import PeftConfig, get_peft_model, get_peft_model_state_dict
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
        from ftlab.methods import apply_method
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
    import json

    import torch

    from ftlab.config import TrainConfig
    from ftlab.errors import CheckpointError, ConfigError, FtlabError
    folder = _folder_arg(folder)
    if isinstance(base, tuple) and base and isinstance(base[0], torch.nn.Module):
        raise ConfigError("base", base, "the model alone: load_model returns (model, tokenizer), so pass "
                          "load_model(...)[0]")
    if not isinstance(base, torch.nn.Module) or getattr(base, "config", None) is None:
        raise ConfigError("base", base, "the base model as load_model returns it (a transformers model)")
    if hasattr(base, "peft_config"):
        raise CheckpointError("base: this model already carries a peft adapter; pass a fresh base from "
                              "load_model(...)[0] (load_trained puts the saved adapter on it)", field="base")
    if not os.path.exists(folder):
        raise CheckpointError(f"folder={folder!r}: no such folder. Pass the folder save_trained wrote, e.g. "
                              "finetune's result.saved_to (output_dir/adapter).", field="folder")
    if not os.path.isdir(folder):
        raise CheckpointError(f"folder={folder!r} is a file; pass the folder save_trained wrote (it holds "
                              "ftlab_method.json and the weights).", field="folder")
    meta = os.path.join(folder, "ftlab_method.json")
    holds = sorted(os.listdir(folder))
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
    trained_on = f"this {cfg.method} run was trained on model={cfg.model!r}"
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        weights = os.path.join(folder, "adapter_model.safetensors")
    elif cfg.method == "full":
        return folder, saved, cfg  # a whole model: load_trained checks its config and weights as load_model does
    else:
        weights = os.path.join(folder, "trained.safetensors")
    if not os.path.isfile(weights):
        raise CheckpointError(f"folder={folder!r}: {os.path.basename(weights)} is missing (it holds {holds[:10]}); "
                              "the save is incomplete: save the run again.", field="folder")
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
            return folder, saved, cfg
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
    return folder, saved, cfg
