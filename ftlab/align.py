"""Preference alignment with TRL: a reward model (RewardTrainer, Bradley-Terry loss), DPO (DPOTrainer) and
GRPO (GRPOTrainer with a rule-based reward). TRL does the training; ftlab adds the data in TRL's shapes, the
shared run settings (ftlab.train.trainer_args), its ReportCallback for live plots and Stop, and the per-step
series a lab plots (DPO's margin, GRPO's mean reward) read from the trainer's log history.

The three trainers train LoRA adapters (LORA_SETTINGS below: r=16, alpha=32, every linear layer) on cfg.model loaded
unquantised (load_model's default bits=16); of the TrainConfig they read the model, the run settings (steps,
batch, rate, length, optimizer, seed, output_dir) and trust_remote_code, not its LoRA fields, and refuse a cfg
asking for another method or an 8/4-bit base."""
from __future__ import annotations

import numbers
import random
import re

import torch
from peft import LoraConfig

from ftlab import models
from ftlab.config import TrainConfig
from ftlab.data import format_prompt, load_records
from ftlab.errors import ConfigError, DataError, check_choice, check_int, check_listeners, check_number, check_text
from ftlab.errors import short as _short
from ftlab.evaluation import check_conversations
from ftlab.method_table import LORA
from ftlab.trainer import build_trainer, train_guarded, trainer_args

PAIR = ("prompt", "chosen", "rejected")

# LoRA on the attention and MLP projections, as ftlab's "lora" method; SEQ_CLS keeps the new score head trainable
LORA_SETTINGS = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")


def preference_pairs(split: str = "train", n: int | None = None, seed: int = 0,
                     negatives: str = "sibling") -> list[dict]:
    """Preference records in TRL's conversational shape: {"prompt": [user turn], "chosen": [assistant turn],
    "rejected": [assistant turn]}, the chosen answer a word's WordNet gloss. negatives="sibling" (the embedded
    pairs): the rejected answer is the gloss of a sibling word under the same hypernym, same style and topic,
    wrong meaning (hard). negatives="random": the gloss of another word of the split (easy: off-topic)."""
    negatives = check_choice("negatives", negatives, ("sibling", "random"))
    n = None if n is None else check_int("n", n, 1)
    seed = check_int("seed", seed, 0)
    if negatives == "sibling":
        rows = load_records("preferences", split, n=n, seed=seed)
    elif negatives == "random":
        words = load_records("definitions", split, n=n, seed=seed)
        if len(words) < 2:
            raise ConfigError("n", n, "at least 2 with negatives='random' (the rejected answer is another gloss)")
        rng = random.Random(seed)
        rows = []
        for i, r in enumerate(words):
            other = words[(i + rng.randrange(1, len(words))) % len(words)]
            rows.append({"prompt": format_prompt(r, 0), "chosen": r["target"], "rejected": other["target"]})
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]


def sums(n: int, seed: int = 0, max_value: int = 10) -> list[dict]:
    """Small additions for GRPO ("What is 7 + 3?", result 10): easy enough that a 135M model gets some right
    when it samples, so the group of answers to one prompt has rewards that differ (GRPO learns from the
    difference; a group that is all wrong or all right teaches nothing)."""
    n, seed, max_value = check_int("n", n, 1), check_int("seed", seed, 0), check_int("max_value", max_value, 1)
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, max_value), rng.randint(1, max_value)
        rows.append({"prompt": [{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}],
                     "result": a + b})
    return rows


def answer_number(text: str) -> int | None:
    """The number a short answer gives as its result: the first after "=" ("2 + 5 = 7"), else the first after
    "is" ("The answer is 7."), else the first number at all. None when there is none."""
    text = check_text("text", text, error=DataError, allow_empty=True)
    text = text.replace(",", "")
    for pattern in (r"=\s*\**\s*(-?\d+)", r"\bis\s*\**\s*(-?\d+)", r"(-?\d+)"):
        m = re.search(pattern, text)
        if m:
            return int(m.group(1))
    return None


def completion_texts(completions) -> list[str]:
    """The answers' texts from what TRL passes a reward function: strings, or for conversational prompts lists of
    messages whose last is the answer ([{"role": "assistant", "content": "..."}])."""
    if isinstance(completions, (str, dict)) or not isinstance(completions, (list, tuple)):
        raise DataError(f"completions={_short(completions)} is not allowed: a list of answers (strings, or message "
                        f"lists as TRL passes for chat prompts), not a {type(completions).__name__}",
                        field="completions")
    texts = []
    for i, c in enumerate(completions):
        if isinstance(c, list):
            last = c[-1] if c else None
            if not (isinstance(last, dict) and isinstance(last.get("content"), str)):
                raise DataError(f"completions[{i}]={_short(c)} is not allowed: a string, or a non-empty list of "
                                "messages ending with {'role': 'assistant', 'content': str}", field="completions")
            c = last["content"]
        elif not isinstance(c, str):
            raise DataError(f"completions[{i}]={_short(c)} is not allowed: a string, or a list of messages",
                            field="completions")
        texts.append(c)
    return texts


def arithmetic_reward(completions, result, **_) -> list[float]:
    """GRPO's rule-based reward: 1 when the answer's result (answer_number) is right, else 0.
    TRL passes the completions (completion_texts reads them) and every other dataset column (here `result`) as
    lists, one item a completion. `result`: the right numbers, one per completion."""
    texts = completion_texts(completions)
    if isinstance(result, (str, dict)) or not isinstance(result, (list, tuple)):
        raise DataError(f"result={_short(result)} is not allowed: a list of the right numbers, one per completion "
                        f"({len(texts)}), not a {type(result).__name__}", field="result")
    if len(result) != len(texts):
        raise DataError(f"result has {len(result)} numbers for {len(texts)} completions: one right number per "
                        "completion is needed", field="result")
    bad = [i for i, r in enumerate(result) if isinstance(r, bool) or not isinstance(r, numbers.Real)]
    if bad:
        raise DataError(f"result[{bad[0]}]={result[bad[0]]!r} is not allowed: a number (the right answer)",
                        field="result")
    return [1.0 if answer_number(t) == r else 0.0 for t, r in zip(texts, result)]


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of one logged quantity, e.g. "rewards/margins" (DPO) or "reward" (GRPO)."""
    key = check_text("key", key)
    if isinstance(history, (str, dict)) or not isinstance(history, (list, tuple)) \
            or not all(isinstance(h, dict) and "step" in h for h in history):
        raise DataError(f"history={_short(history)} is not allowed: a trainer's log history (a list of dicts with "
                        "'step'), as the train_* functions return it", field="history")
    if not any(key in h for h in history):  # a misspelt key would give an empty plot without a word
        keys = sorted({k for h in history for k in h if k != "step"})
        has = f"its keys are {keys}" if history else "the history is empty"
        raise DataError(f"key={key!r} is not allowed: no entry of the history has it; {has}", field="key")
    out = []
    for h in history:
        if key in h:
            v = h[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise DataError(f"history: the entry at step {h['step']} has {key!r} = {_short(v)}: a number is "
                                "needed", field="history")
            out.append((h["step"], float(v)))
    return out


def _check_run(cfg, listeners):
    """What every trainer here reads before a model loads: a TrainConfig, and listeners that can be called."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg", cfg, "a TrainConfig (ftlab.config.TrainConfig(model=..., ...))")
    trains = ("the alignment trainers train LoRA adapters (r=16, alpha=32, every linear layer) on cfg.model "
              "loaded unquantised (bits=16)")
    if cfg.method != LORA.name:
        raise ConfigError("method", cfg.method, f"{LORA.name!r}: {trains}")
    if cfg.effective_bits in (8, 4):
        raise ConfigError("bits", cfg.effective_bits, f"16 or 32: {trains}; an 8- or 4-bit base is not supported here")
    check_listeners(listeners)


def train_reward_model(cfg, train_pairs, eval_pairs, *, listeners=None, callback=None):
    """A scalar reward model: the base with a one-output score head (`...ForSequenceClassification`), LoRA on
    its layers, trained by TRL's RewardTrainer on -log σ(r(chosen) − r(rejected)) (Bradley-Terry).
    Returns (model, tokenizer, before, after, history): `before`/`after` are the held-out evaluation (loss,
    accuracy = share of pairs where chosen scores higher, mean margin) before and after training."""
    _check_run(cfg, listeners)
    train_pairs = check_conversations("train_pairs", train_pairs, PAIR, text_ok=True)
    eval_pairs = check_conversations("eval_pairs", eval_pairs, PAIR, text_ok=True)  # before and after are read on it
    # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
    from trl import RewardConfig, RewardTrainer
    torch.manual_seed(cfg.seed)  # the new score head (drawn while loading) and LoRA weights: the same every run
    model, tok = models.load_model(cfg.model, for_classification=1, trust_remote_code=cfg.trust_remote_code)
    trainer, cb = build_trainer(RewardTrainer, trainer_args(RewardConfig, cfg), model=model, tokenizer=tok,
                                train_records=train_pairs, eval_records=eval_pairs, listeners=listeners,
                                callback=callback, peft_config=LoraConfig(task_type="SEQ_CLS", **LORA_SETTINGS))
    before = _eval(trainer)
    train_guarded(trainer, cfg, cb.result)
    after = _eval(trainer)
    trainer.model.eval()
    return trainer.model, tok, before, after, trainer.state.log_history


def _eval(trainer) -> dict:
    m = trainer.evaluate()
    return {"loss": m["eval_loss"], "accuracy": m["eval_accuracy"], "margin": m["eval_margin"]}


def reward_scores(model, tokenizer, pairs: list[dict], batch_size: int = 8) -> list[tuple[float, float]]:
    """(reward of chosen, reward of rejected) for each pair. Conversations are scored in right-padded batches:
    the score head reads the last token that is not padding, as RewardTrainer trains it."""
    pairs = check_conversations("pairs", pairs, PAIR)  # conversations: each is rendered by the chat template
    batch_size = check_int("batch_size", batch_size, 1)
    texts = [tokenizer.apply_chat_template(p["prompt"] + p[side], tokenize=False)
             for p in pairs for side in ("chosen", "rejected")]
    if model.config.pad_token_id is None:  # the last non-pad token is found through it
        model.config.pad_token_id = tokenizer.pad_token_id
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    scores = []
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
                scores += model(**enc).logits[:, 0].float().tolist()
    finally:
        tokenizer.padding_side = side
    return list(zip(scores[0::2], scores[1::2]))


def train_dpo(cfg, train_pairs, eval_pairs=None, *, beta: float = 0.1, listeners=None, callback=None):
    """DPO (Rafailov et al., 2023) with TRL's DPOTrainer and LoRA: the reference model is the same base with
    the adapter switched off, so only one copy is in memory. Returns (model, tokenizer, held_out, history):
    held_out is the evaluation on eval_pairs after training (mean margin, share of pairs with a positive margin,
    mean reward of chosen and of rejected); the history has per step "rewards/chosen", "rewards/rejected"
    (β·log πθ/πref of each answer) and "rewards/margins"."""
    _check_run(cfg, listeners)
    # β scales log πθ/πref: β ≤ 0 would reward the rejected answers (or nothing); nan would train to nan
    beta = check_number("beta", beta, 0, lo_open=True)
    train_pairs = check_conversations("train_pairs", train_pairs, PAIR, text_ok=True)
    if eval_pairs is not None:
        eval_pairs = check_conversations("eval_pairs", eval_pairs, PAIR, text_ok=True, allow_empty=True)
    # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
    from trl import DPOConfig, DPOTrainer
    model, tok = models.load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    torch.manual_seed(cfg.seed)
    trainer, cb = build_trainer(DPOTrainer, trainer_args(DPOConfig, cfg, beta=beta), model=model, tokenizer=tok,
                                train_records=train_pairs, eval_records=eval_pairs, listeners=listeners,
                                callback=callback, peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA_SETTINGS))
    train_guarded(trainer, cfg, cb.result)
    held_out = {}
    if eval_pairs:  # before training the policy is the reference (LoRA starts at zero): every margin is 0
        m = trainer.evaluate()
        held_out = {"margin": m["eval_rewards/margins"], "accuracy": m["eval_rewards/accuracies"],
                    "chosen": m["eval_rewards/chosen"], "rejected": m["eval_rewards/rejected"]}
    trainer.model.eval()
    return trainer.model, tok, held_out, trainer.state.log_history


def train_grpo(cfg, prompts, reward_funcs, *, num_generations: int = 4, max_completion_length: int = 8,
               temperature: float = 1.0, beta: float = 0.0, listeners=None, callback=None):
    """GRPO (Shao et al., 2024) with TRL's GRPOTrainer and LoRA: each step samples `num_generations` answers
    to each prompt, scores them with `reward_funcs`, and raises the likelihood of the answers that beat their
    group's mean. cfg.batch_size answers a step (a multiple of num_generations). Returns (model, tokenizer,
    history); the history has per step "reward" (mean over the sampled answers) and "reward_std"."""
    _check_run(cfg, listeners)
    # one answer a group has no mean to beat: GRPO's advantage would be 0 for every answer
    num_generations = check_int("num_generations", num_generations, 2)
    max_completion_length = check_int("max_completion_length", max_completion_length, 1)
    temperature = check_number("temperature", temperature, 0, lo_open=True)
    beta = check_number("beta", beta, 0)
    funcs = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not funcs or not all(callable(f) or (isinstance(f, str) and f.strip()) for f in funcs):
        raise ConfigError("reward_funcs", reward_funcs, "a reward function (called with completions and the "
                          "dataset's columns, returning one float each), a reward model id, or a list of them")
    if cfg.batch_size % num_generations:
        raise ConfigError("batch_size", cfg.batch_size, f"a multiple of num_generations={num_generations} "
                          "(each prompt gets a group of answers)")
    prompts = check_conversations("prompts", prompts, ("prompt",), text_ok=True)
    # lazy: trl takes ~0.7 s more to import (on top of torch and transformers); only a run needs it
    from trl import GRPOConfig, GRPOTrainer
    model, tok = models.load_model(cfg.model, trust_remote_code=cfg.trust_remote_code)
    torch.manual_seed(cfg.seed)
    args = trainer_args(GRPOConfig, cfg, num_generations=num_generations, max_completion_length=max_completion_length,
                        temperature=temperature, beta=beta,
                        include_num_input_tokens_seen="no")  # GRPO builds its inputs itself: nothing to count
    trainer, cb = build_trainer(GRPOTrainer, args, model=model, tokenizer=tok, train_records=prompts,
                                listeners=listeners, callback=callback, reward_funcs=reward_funcs,
                                peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA_SETTINGS))
    train_guarded(trainer, cfg, cb.result)
    trainer.model.eval()
    return trainer.model, tok, trainer.state.log_history
