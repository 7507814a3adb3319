"""Where a model comes from, without loading weights: `resolve_arch` (its architecture numbers, for the memory
calculator), `resolve_source` (a local folder, the hub id when cached or online, else the embedded copy) and
`hub_token` (for gated models). transformers and huggingface_hub are imported inside the functions that need
them: the calculator resolves presets through here without them."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ftlab.errors import ModelNotFoundError
from ftlab.models.checks import _check_folder, _looks_like_path, _not_found, _read_config, check_model_name
from ftlab.models.embedded import embedded_folder
from ftlab.models.presets import PRESETS, Arch, arch_from_config, find_preset


def resolve_arch(model) -> Arch:
    """Preset name, hub id, local folder or PretrainedConfig → Arch (no weights are read)."""
    if isinstance(model, Arch):
        return model
    if isinstance(model, os.PathLike) or isinstance(model, str):
        name = check_model_name(model)
    else:
        return arch_from_config(model)
    preset = find_preset(name, encoders=True)
    if preset and preset.encoder:
        raise ModelNotFoundError(f"model={name!r} is an encoder for classification (ftlab.classify): estimate it "
                                 "with estimate_memory(model, ..., task='classification', num_labels=n)")
    if preset:
        return preset.arch
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        return arch_from_config(_read_config(_check_folder(name, path, weights=False)))
    if "/" not in name:
        raise ModelNotFoundError(f"model={name!r} is not a preset, a folder or a hub id (owner/name). "
                                 f"Presets: {sorted(PRESETS)}")
    # lazy: a preset or a folder resolves without transformers; a hub id needs its config.json (cached, or fetched)
    from transformers import AutoConfig
    try:
        return arch_from_config(AutoConfig.from_pretrained(name))
    except OSError as e:
        raise _not_found(name, e) from None
    except ValueError as e:
        if isinstance(e, ModelNotFoundError):
            raise
        raise ModelNotFoundError(f"model={name!r}: its config.json cannot be read by transformers "
                                 f"({type(e).__name__}: {str(e)[:300]})") from None


_HUB = {}  # "reachable": the answer of the first probe in this process


def _hub_reachable() -> bool:
    """One quick look (DNS and a TCP connect, 3 s at most) per process. huggingface_hub would retry an
    unreachable hub with back-off for ~23 s on every load; an offline laptop should pay that never."""
    if "reachable" not in _HUB:
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
    if path.is_dir() or (path.exists() and find_preset(name, encoders=True) is None) or _looks_like_path(name):
        return str(_check_folder(name, path, weights=weights, trust_remote_code=trust_remote_code))
    preset = find_preset(name, encoders=True)
    hub_id = preset.hub_id if preset else name.strip()
    if preset is None and "/" not in name:
        raise ModelNotFoundError(f"model={name!r} is not a preset, a folder or a hub id (owner/name). "
                                 f"Presets: {sorted(PRESETS)}")
    from huggingface_hub import try_to_load_from_cache  # lazy: a folder or a preset's architecture needs no hub
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
                from huggingface_hub import hf_hub_download  # lazy: as try_to_load_from_cache above
                hf_hub_download(hub_id, "config.json", token=hub_token())
                return hub_id
            except Exception:
                pass
    if preset is not None and preset.embedded:
        return str(embedded_folder(preset.name))
    raise _not_found(name, OSError("offline"))


def hub_token() -> str | None:
    """A Hugging Face token for gated models: HF_TOKEN from the environment, else Colab's secrets (the key
    icon, name HF_TOKEN), else None (public models need none). ftlab passes it to from_pretrained and
    never prints, logs or saves it: it appears in no result, config, checkpoint or executed notebook."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from google.colab import userdata  # type: ignore  # lazy: Colab only; elsewhere the import fails
        return userdata.get("HF_TOKEN")
    except Exception:
        return None
