"""Looking inside what a method trained: which vocabulary tokens a learned soft prompt sits nearest to."""
from __future__ import annotations

import torch.nn.functional as F

from ftlab.errors import ConfigError, check_int
from ftlab.methods import adapter_on, check_model


def nearest_vocabulary_tokens(model, tokenizer, k: int = 3, adapter: str = "default") -> list[dict]:
    """For each learned virtual token of a prompt-tuning model (peft), the k vocabulary tokens nearest to it by
    cosine similarity: {"virtual token", "nearest tokens", "cosine" (of the nearest)}.

    Computed on the CPU in fp32 whatever the model's device and dtype: peft hands the prompt back on the CPU
    (get_prompt_embedding_to_save) while the vocabulary stays where the model is (on a GPU the two met in one
    matmul and failed), and the vocabulary (49k x 576 for SmolLM2) is small enough for the CPU."""
    check_model(model, what="nearest_vocabulary_tokens(model, tokenizer)")
    virtual = "prompt_tuning, prefix_tuning and p_tuning have virtual tokens; only prompt tuning's are vectors " \
              "of the vocabulary's embedding space, which nearest tokens need"
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not callable(getattr(model, "get_prompt_embedding_to_save", None)):
        carried = adapter_on(model)
        raise ConfigError("model", type(model).__name__, "a prompt-tuning model (apply_method with "
                          "method='prompt_tuning', or load_trained of such a run): this one carries "
                          f"{'a ' + carried + ' adapter' if carried else 'no adapter'}; {virtual}")
    if not isinstance(adapter, str) or adapter not in configs:
        raise ConfigError("adapter", adapter, f"one of {list(configs)} (the adapters this model carries)")
    kind = str(getattr(configs[adapter].peft_type, "value", configs[adapter].peft_type)).upper()
    if kind != "PROMPT_TUNING":
        raise ConfigError("model", type(model).__name__, f"a prompt-tuning model: its adapter {adapter!r} is "
                          f"{kind}; {virtual}")
    if not callable(getattr(tokenizer, "decode", None)):
        raise ConfigError("tokenizer", tokenizer if tokenizer is None else f"a {type(tokenizer).__name__}",
                          "the model's tokenizer (model, tokenizer = load_model(...))")
    weight = model.get_input_embeddings().weight
    k = check_int("k", k, 1, int(weight.shape[0]))
    prompt = F.normalize(model.get_prompt_embedding_to_save(adapter).detach().float().cpu(), dim=-1)
    vocab = F.normalize(weight.detach().float().cpu(), dim=-1)
    top = (prompt @ vocab.T).topk(k, dim=-1)
    return [{"virtual token": i, "nearest tokens": " | ".join(repr(tokenizer.decode([int(t)])) for t in idx),
             "cosine": float(val[0])} for i, (val, idx) in enumerate(zip(top.values, top.indices))]
