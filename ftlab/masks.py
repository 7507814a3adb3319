"""Attention masks as the models use them: which positions each token may attend to. Read from the model itself
(the mask its first attention layer receives, with eager attention, whose mask is an explicit tensor), or built
by transformers' own mask functions for the prefix-LM mask that neither embedded model uses.

    causal (decoder)       token i sees tokens 0..i: it predicts the next token from the past only
    bidirectional (BERT)   every token sees every (real) token: good for understanding, not for generating
    prefix LM              the prefix (the input) is seen bidirectionally, the rest causally (T5-style LMs, UL2)
"""
from __future__ import annotations

import inspect

import torch

from ftlab.errors import ConfigError, check_int


def _first_attention(model):
    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("Attention"):
            return name, mod
    raise ConfigError("model", type(model).__name__, "a transformer with an ...Attention module")


@torch.no_grad()
def mask_used(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[q, kv] booleans, True where query q may attend to key kv: the mask the model's first attention layer gets
    for the first row of the batch (eager attention: an additive mask, 0 where allowed, very negative elsewhere)."""
    _, attn = _first_attention(model)
    seen = {}

    def hook(module, args, kwargs):  # the mask may come by name or by position
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
        seen.setdefault("mask", bound.get("attention_mask"))

    before = model.config._attn_implementation
    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.set_attn_implementation("eager")
        model.eval()
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
        model.set_attn_implementation(before)
    mask = seen.get("mask")
    n = input_ids.shape[-1]
    if mask is None:  # no mask tensor at all: every position attends to every position
        return torch.ones(n, n, dtype=torch.bool)
    mask = mask[0, 0] if mask.dim() == 4 else mask[0]
    return mask == 0 if mask.dtype != torch.bool else mask


def prefix_lm_mask(config, length: int, prefix: int) -> torch.Tensor:
    """[length, length] booleans of a prefix-LM mask, built by transformers' create_causal_mask with an extra rule
    (or_mask_function): every query also sees the first `prefix` keys."""
    from transformers.masking_utils import create_causal_mask  # lazy: transformers, as the models that use it
    length = check_int("length", length, 1)
    prefix = check_int("prefix", prefix, 0, length)
    cfg = type(config).from_dict(config.to_dict())
    cfg._attn_implementation = "eager"
    embeds = torch.zeros(1, length, 1)
    mask = create_causal_mask(config=cfg, inputs_embeds=embeds, attention_mask=torch.ones(1, length, dtype=torch.long),
                              past_key_values=None, position_ids=torch.arange(length)[None],
                              or_mask_function=lambda b, h, q, kv: kv < prefix)
    return mask[0, 0] == 0 if mask.dtype != torch.bool else mask[0, 0]
