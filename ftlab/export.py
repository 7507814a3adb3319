"""Taking a trained run out of ftlab: `export_model` (a plain transformers folder, an adapter merged with peft's
merge_and_unload and checked by reloading it), `export_adapter` (the adapter alone), `push_to_hub`.
Each folder gets a model card (README.md): the run's settings and the numbers its results.json measured, nothing
else. Every write is atomic (ftlab.results.atomic_dir): an export that fails half-way leaves no folder."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from huggingface_hub import HfApi
from peft import PeftConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ftlab.checkpoints import _folder_arg
from ftlab.errors import CheckpointError, ConfigError, FtlabError, check_bool
from ftlab.method_table import METHODS
from ftlab.models.hub import hub_token
from ftlab.models.loading import load_model
from ftlab.results import atomic_dir, read_results
from ftlab.saved import _read_method_file, _saved_folder
from ftlab.trained import load_trained

METHOD_FILE = "ftlab_method.json"  # what save_trained writes beside the weights: how a run's folder is recognised
_PROMPT = "Exporting a fine-tuned model: its answers must not change. One, two, three, four."
# The merged model is compared with the unmerged one in float32 on the same device. Merging only reorders the
# arithmetic (W·x + s·B·(A·x) becomes (W + s·B·A)·x; DoRA's norms are computed once): float32 rounding (2^-24
# relative) over thousands of terms a matmul and dozens of blocks moves a logit by ~1e-5 of its size (measured:
# tiny model <= 2.4e-6; SmolLM2-135M LoRA/DoRA r=8 6e-5, whose update moved logits by 3.1). A lost, doubled or
# mis-scaled update moves them by the adapter's whole effect (adapter_effect). So: |diff| <= 1e-4·max(1, max|logit|).
_RTOL = 1e-4


def _find_saved(run) -> tuple[Path, Path, object]:
    """(the folder save_trained wrote, the run's folder where results.json may lie, the run's TrainConfig)."""
    path = Path(_folder_arg(run, "run", "a trained run: finetune's output_dir or its result.saved_to"))
    if not path.is_dir():
        raise CheckpointError(f"run={str(run)!r}: no such folder; pass a trained run's output_dir or the folder "
                              "save_trained wrote (finetune's result.saved_to).", field="run")
    inner = sorted(p for p in path.iterdir() if (p / METHOD_FILE).is_file())
    if (path / METHOD_FILE).is_file() or len(inner) == 1:
        saved, run_dir = (path, path.parent) if (path / METHOD_FILE).is_file() else (inner[0], path)
        try:
            return saved, run_dir, _read_method_file(str(saved), _saved_folder(str(saved)))[1]
        except CheckpointError as e:
            raise CheckpointError(f"run: {e}", field="run") from None
    why = (f"it holds several saved runs ({[p.name for p in inner]}): pass one of them" if inner else
           f"neither it nor a folder in it holds {METHOD_FILE} (it holds {sorted(os.listdir(path))[:10]})")
    raise CheckpointError(f"run={str(run)!r} is not a trained run: {why}. Pass finetune's output_dir (its "
                          "adapter/ folder is what save_trained wrote) or that folder itself.", field="run")


def _target(folder, saved: Path, overwrite) -> Path:
    """The export's folder: new or empty (or overwrite=True), never the run's own folder or one inside it."""
    check_bool("overwrite", overwrite)
    # resolved: a name ending in ".." would otherwise be renamed onto itself by the atomic write
    target = Path(_folder_arg(folder, "folder", "where to write the export (a new or empty folder)")).resolve()
    if target.exists() and not target.is_dir():
        raise ConfigError("folder", str(folder), "a folder to write the export to (this is an existing file)")
    t, s = target.resolve(), saved.resolve()
    if t == s or s in t.parents or t in s.parents:
        raise ConfigError("folder", str(folder), f"a folder apart from the run's own ({str(saved)!r}): the export "
                          "must not replace or sit inside what it is made from")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ConfigError("folder", str(folder), f"a new or empty folder: this one holds "
                          f"{sorted(os.listdir(target))[:5]}; pass overwrite=True to replace it")
    return target


def export_model(run, folder, *, base=None, check: bool = True, overwrite: bool = False) -> dict:
    """The trained run as a plain transformers folder (safetensors, tokenizer and its chat template, README.md).

    run: finetune's output_dir, or the folder save_trained wrote in it. base: (model, tokenizer) to put the
    trained weights on (changed: moved to float32, merged into); default: the run's model, unquantised, float32.
    Any adapter peft can merge_and_unload (LoRA, DoRA, QLoRA, LoHa, IA3, LN tuning) is merged, a 4- or 8-bit
    run's into an unquantised copy of its base (merging into quantised weights would round the update away).
    check: reload the folder and compare its logits with the unmerged model's (CheckpointError, no folder, if
    they differ). Full, BitFit and top-k runs are whole models and are saved as they are. Soft prompts and
    Houlsby adapters cannot become a plain model: their adapter folder is exported instead, with "why".
    Returns {"folder", "merged", "plain_model" (loads with transformers alone), "why" (when not merged),
    "max_logit_diff", "adapter_effect" (how far the adapter moves the logits), "note", "files"}."""
    saved, run_dir, cfg = _find_saved(run)
    check = check_bool("check", check)
    target = _target(folder, saved, overwrite)
    method = METHODS[cfg.method]
    why = _why_not_merged(cfg, saved)
    if why:
        return _copy_adapter(saved, run_dir, target, cfg, why)
    model, tok, note = _base(cfg, base)
    trained = load_trained(model, str(saved))
    ids = tok(_PROMPT, return_tensors="pt").input_ids.to(next(trained.parameters()).device)
    with torch.no_grad():
        expected, effect = trained(input_ids=ids).logits.float(), None
        if hasattr(trained, "peft_config"):
            if not callable(getattr(trained.base_model, "merge_and_unload", None)):
                return _copy_adapter(saved, run_dir, target, cfg, f"peft cannot merge a {method.peft_type} adapter "
                                     "into its base (its model has no merge_and_unload)")
            with trained.disable_adapter():
                effect = (trained(input_ids=ids).logits.float() - expected).abs().max().item()
            trained = trained.merge_and_unload()
    info = {"merged": bool(method.peft_type), "plain_model": True, "note": note, "adapter_effect": effect,
            "max_logit_diff": None, **({} if method.peft_type else {"why": f"nothing to merge: {cfg.method} "
                                       "trained the base's own weights; the whole model is saved"})}
    with atomic_dir(target) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if check:
            info["max_logit_diff"] = _check_reload(tmp, expected, ids, cfg)
        files = _write_card(tmp, cfg, run_dir, info)
    return {"folder": str(target), **info, "files": files}


def _why_not_merged(cfg, saved: Path) -> str | None:
    """Why this run cannot become a plain transformers model (None when it can), read before any weights load."""
    method = METHODS[cfg.method]
    if method.peft_type is None and not method.trains_base and not method.saves_whole_model:
        return (f"{cfg.method} adds layers of its own (ftlab's bottleneck modules) that no transformers model "
                "class has; load it with ftlab.load_trained(load_model(...)[0], folder)")
    if method.peft_type is not None:
        try:
            pcfg = PeftConfig.from_pretrained(str(saved))
        except Exception as e:
            raise CheckpointError(f"run={str(saved)!r}: its adapter_config.json cannot be read ({e})",
                                  field="run") from None
        if pcfg.is_prompt_learning:
            return (f"{cfg.method} learns virtual tokens put before the input ({pcfg.peft_type.value}); no weight "
                    "of the base changes, so there is nothing to merge: load the adapter with "
                    "peft.PeftModel.from_pretrained(base, folder) on the base named in README.md")
    return None


def _base(cfg, base):
    """(model, tokenizer, note): the unquantised float32 base the trained weights are put on."""
    note = None
    if cfg.effective_bits < 16:
        note = (f"the run trained on a {cfg.effective_bits}-bit base; merged into an unquantised float32 copy of "
                f"{cfg.model} (merging into quantised weights would round the update away), so the merged model "
                f"adds the update to the original W, not to the {cfg.effective_bits}-bit W it was trained against")
    if base is None:
        return (*load_model(cfg.model, bits=32, trust_remote_code=cfg.trust_remote_code), note)
    if not (isinstance(base, tuple) and len(base) == 2 and isinstance(base[0], torch.nn.Module)):
        raise ConfigError("base", base, "None (the run's base is loaded) or (model, tokenizer) from load_model")
    model, tok = base
    bits = (getattr(model, "ftlab_info", None) or {}).get("bits", 16)
    if getattr(model, "is_quantized", False) or bits < 16:
        raise ConfigError("base", f"a {bits}-bit {type(model).__name__}", f"an unquantised base (load_model("
                          f"{cfg.model!r}, bits=32)) or None: merging into quantised weights rounds the update away")
    given = (f"the trained weights were put on a base passed in by the caller (its source: "
             f"{(getattr(model, 'ftlab_info', None) or {}).get('source', 'unknown')}), not loaded from {cfg.model}")
    return model.float(), tok, f"{note}; {given}" if note else given


def _check_reload(tmp: str, expected, ids, cfg) -> float:
    """Reload the saved folder with transformers alone and compare its logits with the unmerged model's."""
    reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True,
                                                    trust_remote_code=cfg.trust_remote_code)
    with torch.no_grad():
        got = reloaded.to(ids.device).eval()(input_ids=ids).logits.float()
    diff = (got - expected).abs().max().item()
    tol = _RTOL * max(1.0, expected.abs().max().item())
    if not diff <= tol:  # NaN fails too
        raise CheckpointError(f"the exported model answers differently from the trained one (method={cfg.method!r},"
                              f" model={cfg.model!r}): its logits differ by up to {diff:.3g}, allowed {tol:.3g}; "
                              "nothing was written.", field="run")
    return diff


def export_adapter(run, folder, *, overwrite: bool = False) -> dict:
    """The adapter alone: a copy of what the run saved (load it with ftlab.load_trained or, for peft methods,
    peft.PeftModel.from_pretrained), with a model card. Returns {"folder", "merged": False, "files", ...}."""
    saved, run_dir, cfg = _find_saved(run)
    for f in saved.glob("*.safetensors"):  # a damaged file is refused here, as export_model refuses it
        try:
            load_file(str(f))
        except Exception as e:  # safetensors raises its own SafetensorError on a truncated file
            raise CheckpointError(f"{f} cannot be read ({type(e).__name__}: {e}): the run's saved weights are "
                                  "damaged; save them again (save_trained) or re-run", field="run") from None
    return _copy_adapter(saved, run_dir, _target(folder, saved, overwrite), cfg, None)


def _copy_adapter(saved: Path, run_dir: Path, target: Path, cfg, why: str | None) -> dict:
    info = {"merged": False, "plain_model": False, "why": why or "the adapter alone was asked for (export_adapter)",
            "note": None, "adapter_effect": None, "max_logit_diff": None}
    with atomic_dir(target) as tmp:
        for p in saved.iterdir():
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, os.path.join(tmp, p.name))
        files = _write_card(tmp, cfg, run_dir, info)
    return {"folder": str(target), **info, "files": files}


_MEASURED = re.compile(r"loss|accuracy|perplexity|rouge|steps|metric|score", re.I)


def _measured(run_dir: Path) -> tuple[str, list[tuple[str, object]]]:
    """(where, [(key, number)]): results.json's losses, accuracies, ROUGE, steps (top level and one down)."""
    path, rows = run_dir / "results.json", []
    try:
        results = read_results(run_dir) if path.is_file() else {}
    except FtlabError:  # a damaged results.json: the card then states no number
        results = {}
    for key, value in (results.items() if isinstance(results, dict) else []):
        inner = value.items() if isinstance(value, dict) and key != "config" else [(None, value)]
        for k, v in inner:
            name = key if k is None else f"{key}.{k}"
            if isinstance(v, (int, float)) and not isinstance(v, bool) and _MEASURED.search(name):
                rows.append((name, v))
    return str(path), rows[:40]


def _write_card(tmp: str, cfg, run_dir: Path, info: dict) -> list[str]:
    """README.md in `tmp`: the run's settings, its measured numbers, the export's check. Returns the folder's files."""
    method, files = METHODS[cfg.method], sorted({*os.listdir(tmp), "README.md"})
    knobs = [*method.knobs, *(["lora_dropout"] if method.low_rank else []),
             *(["bits", "quant_type", "double_quant"] if cfg.effective_bits < 16 else [])]
    where, rows = _measured(run_dir)
    hub = "/" in cfg.model and not os.path.exists(os.path.expanduser(cfg.model))
    lines = ["---", *([f"base_model: {cfg.model}"] if hub else []),
             f"library_name: {'transformers' if info['plain_model'] else 'peft'}",
             "tags:", "- ftlab", f"- {cfg.method}", "---", "", f"# {cfg.method} fine-tune of {cfg.model}", "",
             f"- **base model**: `{cfg.model}`", f"- **data**: `{cfg.dataset}`",
             f"- **method**: `{cfg.method}` ({method.summary})" + (", merged into the base" if info["merged"] else ""),
             *[f"  - {k} = `{getattr(cfg, k)!r}`" for k in knobs],
             f"- **steps**: max_steps = {cfg.max_steps} (as configured), batch_size = {cfg.batch_size}, seq_len = "
             f"{cfg.seq_len}, learning_rate = {cfg.learning_rate}, optimizer = `{cfg.optimizer}`, seed = {cfg.seed}"]
    if "why" in info:
        lines += ["", f"**{'Whole model' if info['plain_model'] else 'Adapter only'}**: {info['why']}."]
    lines += ["", f"**Note**: {info['note']}.", "", "## Results", ""] if info.get("note") else ["", "## Results", ""]
    if rows:
        lines += [f"Measured by the run, copied from `{where}`:", "", "| key | value |", "| --- | --- |",
                  *[f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows]]
    else:
        lines += [f"No measured numbers: `{where}` is absent or holds none. This card states none."]
    effect = info["adapter_effect"]
    if info.get("max_logit_diff") is not None:
        lines += ["", "## Export check", "", f"Reloaded with transformers alone, its logits on a fixed prompt differ "
                  f"from the trained (unmerged, float32) model's by at most {info['max_logit_diff']:.3g}"
                  + (f" (the adapter itself moves them by up to {effect:.3g})." if effect is not None else ".")]
    lines += ["", "## Files", "", *[f"- `{f}`" for f in files], ""]
    Path(tmp, "README.md").write_text("\n".join(lines), encoding="utf-8")
    return files


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def push_to_hub(folder, repo_id, *, private: bool = True) -> str:
    """Upload an exported folder (export_model or export_adapter) to the Hugging Face hub as model repo_id
    ("owner/name"), private unless private=False. The token comes from the environment (HF_TOKEN, or Colab's
    secrets: ftlab.models.hub.hub_token) and is written nowhere. Returns the repo's URL."""
    folder = _folder_arg(folder, "folder", "a folder export_model or export_adapter wrote")
    if not all(os.path.isfile(os.path.join(folder, f)) for f in ("README.md", METHOD_FILE)) and not all(
            os.path.isfile(os.path.join(folder, f)) for f in ("README.md", "config.json")):
        raise ConfigError("folder", folder, "a folder export_model or export_adapter wrote (README.md and weights)")
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith(".git"):
        raise ConfigError("repo_id", repo_id, "'owner/name': your user or organisation name, '/', the model's "
                          "name (letters, digits, '-', '_', '.'; at most 96 characters each)")
    check_bool("private", private)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").strip()
    if offline not in ("", "0", "false", "False"):
        raise ConfigError("HF_HUB_OFFLINE", offline, "unset (or '0') to upload: this process is offline; set it "
                          "before importing ftlab/transformers (a restarted kernel), with network access")
    token = hub_token()
    if not token:
        raise ConfigError("HF_TOKEN", None, "a Hugging Face token with write access in the environment (export "
                          "HF_TOKEN=..., or Colab's secrets, name HF_TOKEN): make one at hf.co/settings/tokens")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message="Upload an ftlab export")
    return str(url)

