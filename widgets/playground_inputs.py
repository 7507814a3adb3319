"""What the Playground is given, checked: the models (a loaded causal LM; other adapters by name) and the examples
offered in its dropdown (a string, a task record, or a record whose prompt or messages hold a user turn)."""
from __future__ import annotations

import torch

from ftlab.errors import ConfigError
from ftlab.prompts import format_prompt


def _is_peft(model) -> bool:
    return callable(getattr(model, "disable_adapter", None)) and isinstance(getattr(model, "peft_config", None), dict)


def _check_model(field: str, model):
    if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "generate", None)):
        shown = model if model is None or isinstance(model, (str, int, float)) else f"a {type(model).__name__}"
        raise ConfigError(field, shown, "a loaded causal LM with .generate, the model alone (model, tokenizer = "
                                        "load_model(...); load_trained or apply_method gives the trained one)")
    return model


def _check_others(model, others) -> dict:
    """{name: model, or the name of another adapter of `model`}; names other than base and trained."""
    allowed = "a dict {name: model or the name of another adapter of model}, names other than base and trained"
    if not isinstance(others, dict) or any(not isinstance(k, str) or k in ("base", "trained", "") for k in others):
        raise ConfigError("others", others if isinstance(others, dict) else f"a {type(others).__name__}", allowed)
    adapters = sorted(model.peft_config) if _is_peft(model) else []
    for name, other in others.items():
        if isinstance(other, str) and other not in adapters:
            raise ConfigError(f"others[{name!r}]", other, "a model, or the name of one of model's adapters: "
                              + (", ".join(adapters) if adapters else "none (model is not a peft model)"))
        if not isinstance(other, str):
            _check_model(f"others[{name!r}]", other)
    return dict(others)


def _example(i: int, item) -> tuple[str, str]:
    """(system, prompt) of a string, task record, or record with 'prompt'/'messages' (turns before an answer)."""
    if isinstance(item, dict) and isinstance(item.get("source"), str):
        return "", format_prompt(item)
    turns = item.get("prompt", item.get("messages")) if isinstance(item, dict) else item
    said = {"user": turns} if isinstance(turns, str) else {}
    for t in turns if isinstance(turns, list) else []:
        if not isinstance(t, dict) or t.get("role") == "assistant":
            break
        said[t.get("role")] = t.get("content")
    if isinstance(said.get("user"), str) and said["user"].strip():
        return (said.get("system") if isinstance(said.get("system"), str) else ""), said["user"]
    raise ConfigError(f"prompts[{i}]" if i >= 0 else "prompts", item, "a prompt string, a task record ({'source': "
                      "...}), or a record whose 'prompt' or 'messages' holds a user turn (or a list of them)")
