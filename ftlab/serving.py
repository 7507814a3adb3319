"""What a fine-tuned model costs once it is trained: the bytes of what a method saves, the time a forward pass or a
generation takes with its layers in place, and one frozen base answering several tasks in one batch.

* `saved_size(model, cfg, folder)` saves what cfg.method trained the way ftlab saves it (ftlab.trained.save_trained:
  peft's `save_pretrained` for peft methods, the whole model for full fine-tuning, ftlab's own safetensors file for
  the Houlsby adapter) and sets the bytes on disk beside trainable parameters × bytes per parameter.
* `time_variants(calls)` times several callables interleaved (round-robin, the order rotated each round), so a
  machine that slows down for a while slows every variant alike; medians and ratios to a baseline.
* `mixed_logits` / `mixed_generate`: one batch whose rows each use their own adapter, in one forward pass. For
  LoRA, peft's mixed adapter batches (`adapter_names=[...]`). For prompt tuning, peft runs one soft prompt a call,
  so each row's input embeddings are assembled here from its adapter's learned virtual tokens and handed to the
  frozen base. `row_differences` checks either against each row run alone with its adapter set.

Everything runs without gradients; a row's adapter may be BASE (no adapter: the frozen base alone).
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping
from contextlib import contextmanager

import torch

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_int, check_number, check_strings, check_text
from ftlab.methods import check_model
from ftlab.records import check_tokenizer
from ftlab.trained import save_trained

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch; ftlab's soft-prompt batches take it too
_KINDS = ("LORA", "PROMPT_TUNING")  # the peft types a mixed batch is built for


def saved_size(model, cfg, folder) -> dict:
    """Save what `cfg.method` trained on `model` (as apply_method returned it) to `folder` and measure it:
    file_bytes (the weight files, *.safetensors), folder_bytes (everything written, configs included), files,
    trainable (parameters that train), tensors (how many tensors hold them), bytes_per_parameter (of their dtype,
    e.g. 4 for fp32) and trainable_bytes (numel × element size: what the weight files must hold, beside a header
    of a few hundred bytes a tensor: its name, dtype, shape and offsets)."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "the TrainConfig the model was prepared with (apply_method(model, cfg))")
    check_model(model, what="saved_size(model, cfg, folder)")
    folder = check_text("folder", folder if not isinstance(folder, os.PathLike) else os.fspath(folder))
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ConfigError("model", type(model).__name__, f"a model prepared for method={cfg.method!r} with "
                          "apply_method(model, cfg): this one trains no parameter")
    path = save_trained(model, folder, cfg)
    files = {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))}
    sizes = {p.element_size() for p in trained}
    return {"method": cfg.method, "file_bytes": sum(b for n, b in files.items() if n.endswith(".safetensors")),
            "folder_bytes": sum(files.values()), "files": files, "trainable": sum(p.numel() for p in trained),
            "tensors": len(trained),
            "bytes_per_parameter": sizes.pop() if len(sizes) == 1 else None,
            "trainable_bytes": sum(p.numel() * p.element_size() for p in trained), "saved_to": path}


def perturb_lora_b(model, std: float = 0.01, seed: int = 0) -> int:
    """Give every LoRA B matrix random values (normal, `std`): peft starts B at 0, so an untrained adapter changes
    nothing and a merge check on it would compare the base with itself. Returns how many B matrices were set."""
    check_model(model, what="perturb_lora_b(model)")
    std = check_number("std", std, 0, lo_open=True)
    seed = check_int("seed", seed, 0)
    found = [p for n, p in model.named_parameters() if ".lora_B." in n]
    if not found:
        raise ConfigError("model", type(model).__name__, "a model carrying LoRA adapters (peft's lora_B weights); "
                          "this one has none")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in found:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
    return len(found)


def time_variants(calls, repeats: int = 5, warmup: int = 1, baseline: str | None = None) -> dict:
    """Seconds each callable takes, measured interleaved: `warmup` untimed calls of each, then `repeats` rounds in
    which every variant runs once, the order rotated each round (no variant always first). Without gradients.
    Returns {name: {"times_s", "median_s", "min_s", "ratio"}}: ratio = median / the baseline's median (default the
    first variant). Medians, because a shared machine adds long outliers that a mean would absorb."""
    if not isinstance(calls, Mapping) or not calls or not all(callable(f) for f in calls.values()):
        raise ConfigError("calls", calls if not isinstance(calls, Mapping) else list(calls),
                          "a dict {name: a function called without arguments}, at least one")
    repeats = check_int("repeats", repeats, 1)
    warmup = check_int("warmup", warmup, 0)
    names = list(calls)
    baseline = names[0] if baseline is None else baseline
    if baseline not in calls:
        raise ConfigError("baseline", baseline, f"one of the variants' names: {names}")
    times = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                calls[n]()
        for r in range(repeats):
            for n in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                calls[n]()
                times[n].append(time.perf_counter() - t0)
    base = statistics.median(times[baseline])
    return {n: {"times_s": t, "median_s": statistics.median(t), "min_s": min(t),
                "ratio": statistics.median(t) / base} for n, t in times.items()}


def _kind(model, adapters) -> str:
    """The peft type of a mixed batch (LORA or PROMPT_TUNING), after checking the model and the row adapters."""
    check_model(model, what="a mixed-adapter batch")
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not callable(getattr(model, "set_adapter", None)):
        raise ConfigError("model", type(model).__name__, "a peft model carrying the adapters "
                          "(PeftModel.from_pretrained(base, folder, adapter_name=...), then load_adapter(...))")
    adapters = check_strings("adapters", adapters)
    unknown = [a for a in adapters if a != BASE and a not in configs]
    if unknown:
        raise ConfigError("adapters", unknown[0], f"an adapter the model carries, {list(configs)}, or {BASE!r} "
                          "(the base alone)")
    kinds = {str(getattr(c.peft_type, "value", c.peft_type)) for c in configs.values()}
    if len(kinds) != 1 or not kinds <= set(_KINDS):
        raise ConfigError("model", f"adapters of type {sorted(kinds)}", f"adapters all of one type in {list(_KINDS)}")
    kind = kinds.pop()
    if kind == "LORA" and any(getattr(m, "merged", False) for m in model.modules()):
        raise ConfigError("model", "a merged LoRA model", "unmerged adapters: a merged update is in the weights "
                          "of every row; call unmerge_adapter() first")
    return kind


@contextmanager
def _evaluating(model):
    """The model in eval mode for the block (peft refuses adapter_names in training mode), then as it was."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _check_inputs(inputs, rows: int | None = None) -> tuple:
    if not isinstance(inputs, Mapping) or not torch.is_tensor(inputs.get("input_ids")) \
            or not torch.is_tensor(inputs.get("attention_mask")):
        raise ConfigError("inputs", inputs if inputs is None or isinstance(inputs, str) else type(inputs).__name__,
                          "a tokenizer's output with input_ids and attention_mask: tokenizer(texts, "
                          "return_tensors='pt', padding=True)")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if rows is not None and ids.shape[0] != rows:
        raise ConfigError("adapters", f"{rows} names", f"one adapter name per row of inputs ({ids.shape[0]} rows)")
    return ids, mask


def soft_prompt_inputs(model, inputs, adapters) -> dict:
    """The frozen base's inputs for a batch whose row i is preceded by adapters[i]'s learned virtual tokens (peft's
    prompt tuning; BASE: none): {"inputs_embeds", "attention_mask", "position_ids"}. Each row is its soft prompt and
    its own tokens (padding dropped), and the rows are left-padded together; positions count the real ones, so a
    row sees exactly what it would see alone. Soft prompts of different lengths may share a batch."""
    if _kind(model, adapters) != "PROMPT_TUNING":
        raise ConfigError("model", "LoRA adapters", "a prompt-tuning model (for LoRA, mixed_logits passes "
                          "adapters to peft as adapter_names)")
    ids, mask = _check_inputs(inputs, len(adapters))
    embed = model.get_input_embeddings()
    device, dtype = embed.weight.device, embed.weight.dtype
    soft = {a: model.get_prompt_embedding_to_save(a).to(device, dtype) for a in set(adapters) if a != BASE}
    rows = []
    for i, a in enumerate(adapters):
        own = embed(ids[i][mask[i].bool()].to(device))
        rows.append(torch.cat([soft[a], own]) if a != BASE else own)
    width = max(len(r) for r in rows)
    x = torch.zeros(len(rows), width, embed.weight.shape[1], device=device, dtype=dtype)
    m = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        x[i, width - len(r):], m[i, width - len(r):] = r, 1
    return {"inputs_embeds": x, "attention_mask": m, "position_ids": (m.cumsum(-1) - 1).clamp(min=0)}


def mixed_logits(model, inputs, adapters) -> list:
    """One forward pass for a batch whose row i uses adapters[i]; returns each row's logits (float32) at its own
    tokens (padding and virtual tokens left out): a list of [tokens, vocab] tensors."""
    kind = _kind(model, adapters)
    ids, mask = _check_inputs(inputs, len(adapters))
    device = next(model.parameters()).device
    with _evaluating(model):
        if kind == "LORA":
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), adapter_names=list(adapters)).logits
            return [logits[i][mask[i].bool().to(device)].float() for i in range(len(adapters))]
        batch = soft_prompt_inputs(model, inputs, adapters)
        logits = model.get_base_model()(**batch).logits
    return [logits[i, logits.shape[1] - int(mask[i].sum()):].float() for i in range(len(adapters))]


def _alone(model, ids, adapter: str, kind: str) -> torch.Tensor:
    """One row's logits at its tokens, run alone with its adapter set (BASE: the base without adapter)."""
    x = ids[None]
    if adapter == BASE:
        if kind == "LORA":
            with model.disable_adapter():
                return model(input_ids=x).logits[0].float()
        return model.get_base_model()(input_ids=x).logits[0].float()
    model.set_adapter(adapter)
    return model(input_ids=x).logits[0, -len(ids):].float()


def row_differences(model, inputs, adapters) -> list[float]:
    """For each row of a mixed batch (mixed_logits), the largest |logit difference| from that row run alone with its
    adapter set: 0 up to float rounding when one mixed pass serves every task as separate passes would. The model
    keeps the adapter it had active."""
    kind = _kind(model, adapters)
    ids, mask = _check_inputs(inputs, len(adapters))
    mixed = mixed_logits(model, inputs, adapters)
    device = next(model.parameters()).device
    active, out = model.active_adapter, []
    try:
        with _evaluating(model):
            for i, a in enumerate(adapters):
                own = _alone(model, ids[i][mask[i].bool()].to(device), a, kind)
                out.append((mixed[i] - own).abs().max().item())
    finally:
        model.set_adapter(active)
    return out


def mixed_generate(model, tokenizer, prompts, adapters, max_new_tokens: int = 16) -> list[str]:
    """Greedy answers to `prompts` (already templated) in one batched generation, prompt i under adapters[i]."""
    prompts = check_strings("prompts", prompts)
    kind = _kind(model, adapters)
    if len(prompts) != len(adapters):
        raise ConfigError("adapters", f"{len(adapters)} names", f"one adapter name per prompt ({len(prompts)})")
    check_tokenizer(tokenizer)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    greedy = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with _evaluating(model):
        if kind == "LORA":
            out = model.generate(**enc.to(device), adapter_names=list(adapters), **greedy)
            out = out[:, enc["input_ids"].shape[1]:]
        else:  # from embeddings, transformers returns the new tokens only
            batch = soft_prompt_inputs(model, enc, adapters)
            batch.pop("position_ids")  # generate derives them from the attention mask, step by step
            out = model.get_base_model().generate(**batch, **greedy)
    return [s.strip() for s in tokenizer.batch_decode(out, skip_special_tokens=True)]
