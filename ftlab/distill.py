"""Knowledge distillation: a smaller student made from the teacher's own layers, token-level distillation with
TRL's GKDTrainer (off-policy: the dataset's completions), sequence-level distillation (the student fine-tuned on
the teacher's generations), and the numbers that compare a student with its teacher."""
from __future__ import annotations

import copy
import numbers
import os

import numpy as np
import torch

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_int, check_number
from ftlab.evaluation import check_conversations, check_model, check_tokenizer, generate, scored_batches
from ftlab.trainer import build_trainer, train_guarded, trainer_args


def _number(field: str, value, *args, **kwargs) -> float:
    """check_number, with the value shown as the caller wrote it (temperature=0, not 0.0)."""
    try:
        return check_number(field, value, *args, **kwargs)
    except ConfigError as e:
        raise ConfigError(field, value, e.allowed) from None


def shrink(model, keep: int | list[int]):
    """A student with fewer transformer blocks, initialised from the teacher: its embeddings, final norm, head
    and the blocks `keep` (distinct indices in increasing order, or a count: evenly spaced from first to last,
    as DistilBERT took every other layer). Teacher and student share the tokenizer and vocabulary, which
    token-level distillation needs.

    Written here because transformers has no function for it; it is a copy and a slice of the block list.
    """
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n, int) or not isinstance(getattr(getattr(model, "model", None), "layers", None),
                                                torch.nn.ModuleList):
        shown = type(model).__name__ if isinstance(model, torch.nn.Module) else model
        raise ConfigError("model", shown, "a decoder-only transformers model with its blocks in "
                          "model.model.layers (e.g. LlamaForCausalLM); merge a peft model first (merge_and_unload)")
    given = keep
    if isinstance(keep, numbers.Integral) and not isinstance(keep, bool):
        keep = int(keep)
        if not 1 <= keep <= n:
            raise ConfigError("keep", given, f"between 1 and the teacher's {n} layers")
        keep = sorted({round(i * (n - 1) / max(keep - 1, 1)) for i in range(keep)})
    allowed = f"a count from 1 to {n}, or a list of distinct layer indices in 0..{n - 1}"
    if not isinstance(keep, (list, tuple, range, np.ndarray)) or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in keep):  # True is not layer 1
        raise ConfigError("keep", given, allowed)
    keep = [int(i) for i in keep]
    if not keep or any(not 0 <= i < n for i in keep):
        raise ConfigError("keep", given, f"layer indices in 0..{n - 1}")
    twice = sorted({i for i in keep if keep.count(i) > 1})
    if twice:  # the student would hold one module twice: both places would train (and be saved) as one block
        raise ConfigError("keep", given, f"distinct layer indices in 0..{n - 1} (layer {twice[0]} is listed twice)")
    if keep != sorted(keep):  # the student runs its blocks in list order: [1, 0] would run them reversed
        raise ConfigError("keep", given, f"layer indices in increasing order, e.g. {sorted(keep)}: the student runs "
                          "its blocks in the order given, and the teacher's blocks only work in their own order")
    student = copy.deepcopy(model)
    # A model trained by TRL's SFTTrainer keeps an instance-level `forward` whose closure calls the original
    # model's forward: deep-copied, the student would run the teacher's blocks. Use the class's forward.
    student.__dict__.pop("forward", None)
    student.model.layers = torch.nn.ModuleList(student.model.layers[i] for i in keep)
    for new_index, block in enumerate(student.model.layers):
        block.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the new stack
    student.config.num_hidden_layers = len(keep)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    student.ftlab_kept_layers = list(keep)
    return student


class _TemperatureGKD:
    """GKDTrainer whose divergence is taken at the distillation temperature T and scaled by T² (Hinton et al.,
    2015: the gradients of soft targets shrink as 1/T², so the scale keeps them comparable across T). TRL's
    GKDTrainer applies its `temperature` to sampling only and computes the loss at T = 1; this override passes
    T to TRL's own generalized_jsd_loss and changes nothing else."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        self.teacher_model.eval()
        with torch.no_grad():
            teacher = self.teacher_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        t = self.temperature
        loss = t * t * self.generalized_jsd_loss(student.logits[:, :-1, :], teacher.logits[:, :-1, :],
                                                 labels=inputs["labels"][:, 1:], beta=self.beta, temperature=t,
                                                 num_items_in_batch=num_items_in_batch)
        return (loss, student) if return_outputs else loss


def _vocabulary(model) -> int | None:
    """Rows of the model's output layer (its vocabulary as the logits see it), or config.vocab_size."""
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    weight = getattr(head, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _student_and_teacher(student, teacher) -> None:
    """Two loaded models whose logits cover the same vocabulary (token-level comparisons index one by the
    other's token ids), checked before either runs."""
    check_model(student, "student")
    check_model(teacher, "teacher")
    s, t = _vocabulary(student), _vocabulary(teacher)
    if s is not None and t is not None and s != t:
        raise ConfigError("student", type(student).__name__,
                          f"a student with the teacher's vocabulary: the student has {s} tokens, the teacher "
                          f"{t} (make the student from the teacher with shrink(teacher, ...))")


def train_token_kd(student, teacher, tokenizer, train_records, cfg, *, temperature: float = 2.0, beta: float = 0.0,
                   listeners=None, callback=None):
    """Token-level distillation: on each completion token the student's distribution at temperature T is pulled
    towards the teacher's, KL(teacher ‖ student) for beta=0 (the classic choice; beta=1 is the reverse KL, 0.5
    the Jensen-Shannon divergence). Off-policy: the tokens are the dataset's completions (GKD with lmbda=0).
    train_records: conversational prompt/completion records. Returns (TrainResult, student).

    Every weight of the student trains (full fine-tuning), whatever cfg.method says: of cfg only the run
    settings are used (max_steps, batch_size, learning_rate, seed; seq_len, optimizer, gradient_checkpointing
    and output_dir as every trainer here reads them), never its method, LoRA or quantisation fields."""
    _student_and_teacher(student, teacher)
    check_tokenizer(tokenizer)
    # T ≤ 0 or nan divides the logits into nonsense, and the T² scale then trains the weights to nan
    temperature = _number("temperature", temperature, 0, lo_open=True)
    beta = _number("beta", beta, 0, 1)  # the mix of forward and reverse KL (0.5: Jensen-Shannon)
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (ftlab.config.TrainConfig(method='full', ...))")
    train_records = check_conversations("train_records", train_records)
    # GKDTrainer lives in trl.experimental, which warns on import; this module pins trl and tests the API
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    student.requires_grad_(True)  # a copy of a frozen (merged) teacher has every weight frozen
    teacher.requires_grad_(False)
    trainer_class = type("TemperatureGKDTrainer", (_TemperatureGKD, GKDTrainer), {})
    args = trainer_args(GKDConfig, cfg, lmbda=0.0, beta=beta, temperature=temperature, seq_kd=False,
                        include_num_input_tokens_seen="no")
    messages = [{"messages": r["prompt"] + r["completion"]} for r in train_records]
    trainer, cb = build_trainer(trainer_class, args, model=student, tokenizer=tokenizer, train_records=messages,
                                listeners=listeners, callback=callback, teacher_model=teacher)
    train_guarded(trainer, cfg, cb.result)
    student.eval()
    return cb.result, student


def with_teacher_answers(teacher, tokenizer, train_records, max_new_tokens: int = 32) -> list[dict]:
    """Sequence-level distillation's data (Kim & Rush, 2016): the same prompts, with the teacher's greedy answer
    as the completion."""
    check_model(teacher, "teacher")
    check_tokenizer(tokenizer)
    train_records = check_conversations("train_records", train_records, ("prompt",))
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
               for r in train_records]
    answers = generate(teacher, tokenizer, prompts, max_new_tokens=max_new_tokens)
    return [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": a.strip()}]}
            for r, a in zip(train_records, answers)]


def against_teacher(student, teacher, tokenizer, records, batch_size: int = 8) -> dict:
    """On the completion tokens of held-out conversational records: the student's loss on the reference
    (cross-entropy), its mean KL(teacher ‖ student) per token at T = 1, and how often its most likely next token
    is the teacher's (top-1 agreement)."""
    _student_and_teacher(student, teacher)  # another vocabulary would fail as an IndexError inside the embedding
    batches = scored_batches(tokenizer, records, batch_size)  # refuses what would end in 0/0
    ce = kl = agree = count = 0.0
    device = next(student.parameters()).device
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            s = student(**inputs).logits[:, :-1].float().log_softmax(-1)
            t = teacher(**inputs).logits[:, :-1].float().log_softmax(-1)
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            ce += -s.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)[mask].sum().item()
            kl += (t.exp() * (t - s)).sum(-1)[mask].sum().item()
            agree += (s.argmax(-1) == t.argmax(-1))[mask].sum().item()
            count += mask.sum().item()
    return {"loss": ce / count, "kl_to_teacher": kl / count, "top1_agreement": agree / count}
