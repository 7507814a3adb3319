"""Memory of a BERT-style encoder with a classification head, trained as ftlab.classify trains it (transformers'
Trainer, fp32 weights and compute, AdamW): estimate_memory(model, ..., task="classification") lands here.

An encoder differs from the causal LMs of ftlab.memory in what decides its memory: no LM head and no logits over a
vocabulary (the head gives num_labels scores a sequence), biases on every linear layer and LayerNorm, a GELU MLP
(up, down; no gate), learned position and token-type embeddings, a pooler, and attention both ways. The parts:

    weights       4 bytes a parameter (load_classifier loads fp32): embeddings (word, position, token type, a
                  LayerNorm), `layers` blocks (q, k, v, o, the MLP's two layers, two LayerNorms, all with biases),
                  the head (BERT: pooler h×h and classifier h×n; RoBERTa: dense h×h and out_proj h×n)
    adapters      peft's adapters and its trained copy of the head (modules_to_save), fp32
    gradients, optimizer   4 and 8 bytes a trainable parameter (AdamW's two fp32 moments)
    activations   what autograd saves for backward, fp32: the method row's EncoderShape (ftlab.encoder_shapes, read
                  from the tensors a training forward saves) for the tokens and the blocks that save, plus three
                  attention score tensors (batch × heads × seq²) a block: sdpa's math path, which a CPU takes with
                  dropout on. A GPU's fused kernels keep only a log-sum-exp a row: not measured, so on cuda the
                  estimate keeps the CPU's three (an upper bound on that term)
    logits        batch × num_labels: negligible, kept for the table's shape

On device="cuda" the CUDA context of ftlab.gpus is added (no allocator reserve: not measured for encoders); on
device="cpu" the process baseline of ftlab.memory_cpu, the activations scaled and a working set added as ENCODER_CPU
says (fitted to measured peak RSS; the errors of the rows that only test it are there). The Trainer runs without
ftlab's guard: no good_weights. Architectures: bert, roberta,
xlm-roberta, camembert (the same block); others (DistilBERT, ALBERT, DeBERTa, ModernBERT, ELECTRA) are refused,
their blocks differ.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import psutil

from ftlab.encoder_shapes import ENCODER_TYPES, EncoderArch, EncoderSizes, is_encoder_config
from ftlab.errors import ConfigError, check_choice, check_int
from ftlab.gpus import GPUS, Fit
from ftlab.layout import LAYOUT_DEFAULTS
from ftlab.memory_cpu import CPU  # the process baseline: the same kernel and libraries
from ftlab.method_table import METHODS
from ftlab.models.presets import find_preset

GIB = 2**30
# the methods with a row for encoders (their `encoder` field); DoRA has none: its saved tensors (weight norms, the
# scaled base output) were measured not to follow LoRA's
ENCODER_METHODS = tuple(name for name, m in METHODS.items() if m.encoder is not None)


@dataclass(frozen=True)
class EncoderCpu:
    # A CPU run's peak RSS over its baseline against this module's parts: the activations that grow with tokens and
    # the attention scores, each times a factor, plus a working set. Least squares on the rows full and top_k (seq 48
    # and 128) of ftlab/measured/cpu_encoder_2026-12-02.json (scripts/measure_encoder_memory.py); its lora, ia3 and
    # bitfit rows only test them: -17 % (lora, seq 128) to +2 %. Above 1, as the decoders' 1.85 (ftlab.memory_cpu):
    # glibc keeps freed blocks for reuse and eager kernels make temporaries that autograd does not keep.
    tokens: float = 1.27
    scores: float = 1.22
    working_gib: float = 0.068


ENCODER_CPU = EncoderCpu()


def estimate_classification(model, given: dict, M):
    """estimate_memory(model, ..., task="classification") with its arguments `given`; M: ftlab.memory (handed over,
    as to ftlab.memory_cpu). An argument that has no meaning for an encoder, or that is not modelled for one yet, is
    refused by name."""
    unsupported = dict(bits=(None, 32), gradient_checkpointing=(False,), trainer=("trl", "plain"),
                       **{k: (v,) for k, v in LAYOUT_DEFAULTS.items()})
    for k, ok in unsupported.items():
        if given[k] not in ok:
            raise ConfigError(k, given[k], f"{ok[-1]!r} (or left out) with task='classification': an encoder is "
                              "estimated as ftlab.classify trains it (fp32, no checkpointing, one device)")
    if isinstance(model, M.TrainConfig):
        raise ConfigError("model", "a TrainConfig", "an encoder (preset, folder, hub id or config) with "
                          "task='classification': a TrainConfig describes a causal LM's run")
    M.check_keywords(given["unknown"])
    sizes = {k: check_int(k, given[k], 1) for k in ("lora_r", "batch_size", "seq_len", "top_k_layers")}
    row = METHODS[check_choice("method", given["method"], ENCODER_METHODS)]
    optimizer = check_choice("optimizer", given["optimizer"], M.OPTIMIZER_STATE_BYTES)
    gpu = None if given["gpu"] is None else check_choice("gpu", given["gpu"], GPUS)
    device = check_choice("device", given["device"], ("cuda", "cpu"))
    arch = EncoderArch.from_config(encoder_config(model))
    seq, batch = check_int("seq_len", sizes["seq_len"], 1, arch.max_positions), sizes["batch_size"]
    z = EncoderSizes(check_int("num_labels", given["num_labels"], 2), sizes["lora_r"], given["lora_targets"],
                     sizes["top_k_layers"])
    shape = row.encoder(arch, z)
    n, total_params = shape.trainable, arch.n_params(z.num_labels)
    blocks = arch.layers if shape.blocks is None else shape.blocks
    tokens = blocks * (shape.per_token * batch * seq + shape.per_block) + shape.embeddings * batch * seq
    scores = blocks * 3 * batch * arch.heads * seq * seq
    state = M.OPTIMIZER_STATE_BYTES[optimizer]
    c = {"weights": 4.0 * total_params, "adapters": 0.0 if row.trains_base else 4.0 * n, "gradients": 4.0 * n,
         "optimizer": (8.0 if state is None else state) * n, "activations": 4.0 * (tokens + scores),
         "logits": 4.0 * batch * z.num_labels}
    if device == "cpu":  # what a CPU process holds beyond what autograd saves (see ENCODER_CPU)
        c = {"baseline": CPU.baseline_gib * GIB, **c,
             "activations": 4.0 * (ENCODER_CPU.tokens * tokens + ENCODER_CPU.scores * scores),
             "working_set": ENCODER_CPU.working_gib * GIB}
        ram = psutil.virtual_memory().total / GIB
        fit = Fit("this machine's RAM (psutil's total)", sum(c.values()) / GIB <= ram, ram, ram - sum(c.values()) / GIB)
    else:
        c["cuda_context"] = GPUS[gpu or "H100-80GB"].context_gib * GIB
        card = GPUS.get(gpu)
        fit = Fit(gpu, sum(c.values()) / GIB <= card.total_gib, card.total_gib,
                  card.total_gib - sum(c.values()) / GIB) if card else None
    comps = {k: v / GIB for k, v in c.items()}
    total = sum(comps.values())
    base = comps.get("baseline", 0.0) + comps.get("cuda_context", 0.0)
    return M.MemoryEstimate(total_gib=total, peak_allocated_gib=total - base, components=comps, fits=fit,
                            trainable_params=n, details={"tokens_per_step": batch * seq, "arch": arch,
                                                         "task": "classification", "device": device,
                                                         "total_params": total_params,
                                                         "attention": "sdpa's math path (3 seq² tensors a block), as "
                                                                      "measured on a CPU; an upper bound on a GPU"})


def config_dict(model) -> dict | None:
    """A config as a dict: given as one, a transformers config, or a local folder's config.json (else None)."""
    if isinstance(model, dict):
        return model
    if hasattr(model, "to_dict") and not isinstance(model, (str, os.PathLike)):
        return model.to_dict()
    path = os.path.join(os.path.expanduser(str(model)), "config.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # resolve_arch reads it again and says what is wrong
    return None


def encoder_config(model) -> dict:
    """The config (as a dict) of an encoder: an encoder preset (its architecture, no files read), a local folder's
    config.json, a transformers config or its dict, or a hub id (AutoConfig: cached, or online). Anything that is
    not a BERT-style encoder is refused, naming `model`."""
    d = None
    if isinstance(model, str):
        preset = find_preset(model, encoders=True)
        if preset is not None and preset.encoder:
            a = preset.arch
            d = dict(model_type="bert", num_hidden_layers=a.layers, hidden_size=a.hidden,
                     intermediate_size=a.intermediate, num_attention_heads=a.heads, vocab_size=a.vocab,
                     max_position_embeddings=a.max_positions, type_vocab_size=2)
        elif preset is not None:
            raise ConfigError("model", model, "an encoder with task='classification' (a BERT-style model such as "
                              "'minilm-l6'); this preset is a causal language model: task='causal_lm'")
    if d is None:
        d = config_dict(model)
    if d is None and isinstance(model, str) and "/" in model:
        from transformers import AutoConfig  # lazy: a hub id needs its config.json
        try:
            d = AutoConfig.from_pretrained(model).to_dict()
        except (OSError, ValueError) as e:
            raise ConfigError("model", model, f"an encoder whose config.json can be read ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None
    if not isinstance(d, dict):
        raise ConfigError("model", model, "an encoder preset ('minilm-l6'), a folder with a config.json, a hub id, or "
                          "a transformers config of a BERT-style encoder")
    if not is_encoder_config(d):
        raise ConfigError("model", d.get("model_type"), f"a BERT-style encoder ({', '.join(ENCODER_TYPES)}) with "
                          "task='classification'; a decoder's memory is estimated with task='causal_lm'")
    return d
