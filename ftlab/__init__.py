"""ftlab: fine-tuning language models in a notebook, with the memory it will take known before it runs.

The names a lab uses are importable from here (`from ftlab import TrainConfig, estimate_memory, finetune`);
each lives in the module that owns it (see the README's "How ftlab is built"). They load on first use, so
that `from ftlab import estimate_memory` stays torch-free as the calculator is, while `finetune` brings in
torch, transformers and TRL only when it is asked for.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "ftlab.config": ["TrainConfig"],
    "ftlab.errors": ["CheckpointError", "ConfigError", "DataError", "FtlabError", "ModelNotFoundError",
                     "RunStateError"],
    "ftlab.memory": ["count_trainable", "estimate_memory", "max_batch_size", "max_seq_len"],
    "ftlab.gpus": ["GPUS"],
    "ftlab.layout": ["Layout"],
    "ftlab.scale_out": ["cheapest_fit"],
    "ftlab.method_table": ["METHODS", "Method", "register_method"],
    "ftlab.models": ["BaseModels", "PRESETS", "load_for", "load_model", "load_tokenizer", "resolve_arch"],
    "ftlab.methods": ["apply_method", "check_setup", "trainable_parameters"],
    "ftlab.trained": ["load_trained", "save_trained"],
    "ftlab.data": ["chat_prompts", "fit_to_length", "load_records", "sft_data"],
    "ftlab.train": ["Run", "finetune", "train_sft"],
    "ftlab.evaluation": ["completion_loss", "generate", "perplexity", "rouge"],
    "ftlab.measure": ["MemoryMonitor"],
    "ftlab.compare": ["compare_methods"],
    "ftlab.results": ["read_results", "write_results"],
    "ftlab.export": ["export_adapter", "export_model", "push_to_hub"],
}
_API = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_API)


def __getattr__(name: str):
    """A public name, imported from its home on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'ftlab' has no attribute {name!r}; its public names are {__all__}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
