"""What the KL term to the reference model does, measured: DPO trained at several β from the same start (held-out
margin, accuracy and how far the policy moved), and GRPO on a reward that can be gamed, with and without TRL's
KL penalty (`beta` of GRPOConfig). ftlab.align trains; this module measures the trained policies and words what
the numbers show.

How far a policy moved is measured as the mean per-token KL(πθ ‖ πref) over the tokens of held-out answers:
at each answer position the two next-token distributions (LoRA on, LoRA off) are compared over the whole
vocabulary, so it needs no sampling and reads the same for every run. The reference is the LoRA model with its
adapter switched off, as DPOTrainer and GRPOTrainer use it."""
from __future__ import annotations

import dataclasses
import math
import numbers

import torch

from ftlab import align
from ftlab.errors import ConfigError, DataError, check_int, check_number, check_text
from ftlab.evaluation import generate
from ftlab.records import check_conversations

LENGTH_TARGET = 10  # words: length_reward pays in full from this many on (about what 10-12 tokens hold)


def parse_betas(field: str, text: str) -> list[float]:
    """"0.05,0.1,0.5" -> [0.05, 0.1, 0.5]: positive, finite, no repeats, at least one. A single number (what
    papermill's -p makes of "0.5") is one value."""
    if isinstance(text, numbers.Real) and not isinstance(text, bool):
        return [check_number(field, text, 0, lo_open=True)]
    text = check_text(field, text)
    allowed = "comma-separated positive numbers, each once, e.g. '0.05,0.1,0.5'"
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(field, text, allowed) from None
    if any(not math.isfinite(v) or v <= 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(field, text, allowed)
    return values


def policy_kl(model, tokenizer, prompts: list, answers: list[str], batch_size: int = 8) -> float:
    """Mean per-token KL(πθ ‖ πref) in nats over the answers' tokens, each answer read after its prompt (a list
    of chat messages, rendered by the chat template). πθ: `model` (a peft model); πref: the same with its adapter
    disabled. 0 before training (LoRA starts as a no-op)."""
    if not callable(getattr(model, "disable_adapter", None)):
        raise ConfigError("model", type(model).__name__, "a peft model (the reference is the model with its "
                          "adapter disabled), as align.train_dpo and align.train_grpo return it")
    recs = check_conversations("prompts", [{"prompt": p} for p in prompts], ("prompt",))
    if isinstance(answers, str) or not isinstance(answers, (list, tuple)) or len(answers) != len(recs) \
            or not all(isinstance(a, str) for a in answers):
        raise DataError(f"answers: {len(recs)} strings are needed, one per prompt; got {type(answers).__name__} "
                        f"of {len(answers) if isinstance(answers, (list, tuple)) else '?'}", field="answers")
    batch_size = check_int("batch_size", batch_size, 1)
    heads = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in recs]
    total, count = 0.0, 0
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        for i in range(0, len(heads), batch_size):
            h, a = heads[i:i + batch_size], answers[i:i + batch_size]
            enc = tokenizer([x + y for x, y in zip(h, a)], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            starts = [len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in h]
            mask = enc["attention_mask"].clone()
            for row, s in enumerate(starts):
                mask[row, :s] = 0  # the prompt's tokens are not the answer's
            mask = mask[:, 1:].bool()  # logits at t predict token t+1
            with torch.no_grad():  # the answer's positions picked before the softmax: most tokens are the prompt's
                logp = torch.log_softmax(model(**enc).logits[:, :-1][mask].float(), -1)
                with model.disable_adapter():
                    logq = torch.log_softmax(model(**enc).logits[:, :-1][mask].float(), -1)
            total += (logp.exp() * (logp - logq)).sum().item()
            count += logp.shape[0]
    finally:
        tokenizer.padding_side = side
    return total / max(count, 1)


def dpo_point(model, tokenizer, beta: float, held_out: dict, eval_pairs: list[dict]) -> dict:
    """One row of the β sweep from a DPO run (align.train_dpo's model, tokenizer and held_out): β, the held-out
    margin and accuracy, the mean log πθ/πref of chosen and of rejected answers (TRL's implicit reward / β: how
    far the likelihoods moved, on one scale for every β), and policy_kl over the chosen and rejected answers."""
    beta = check_number("beta", beta, 0, lo_open=True)
    missing = [k for k in ("margin", "accuracy", "chosen", "rejected") if k not in (held_out or {})]
    if missing:
        raise DataError(f"held_out lacks {missing}: pass align.train_dpo's held_out (from a run with eval_pairs)",
                        field="held_out")
    pairs = check_conversations("eval_pairs", eval_pairs, align.PAIR)
    kl = policy_kl(model, tokenizer, [p["prompt"] for p in pairs] * 2,
                   [p[s][-1]["content"] for s in ("chosen", "rejected") for p in pairs])
    return {"beta": beta, "margin": held_out["margin"], "accuracy": held_out["accuracy"],
            "log_ratio_chosen": held_out["chosen"] / beta, "log_ratio_rejected": held_out["rejected"] / beta,
            "log_ratio_margin": held_out["margin"] / beta, "kl": kl}


def dpo_beta_sweep(cfg, train_pairs, eval_pairs, betas: list[float], *, done: dict | None = None,
                   listeners_for=None) -> list[dict]:
    """align.train_dpo at each β (same cfg, pairs, steps and seed: the same start), one dpo_point row each, in
    the order given. `done`: rows already measured, by β (the lab's own DPO run), not trained again.
    `listeners_for(beta)`: the listeners of that run (a live loss curve), or None."""
    if isinstance(betas, str) or not isinstance(betas, (list, tuple)) or not betas:
        raise ConfigError("betas", betas, "a non-empty list of positive numbers (parse_betas('0.05,0.1,0.5'))")
    betas = [check_number("betas", b, 0, lo_open=True) for b in betas]
    done = dict(done or {})
    rows = []
    for beta in betas:
        if beta not in done:
            run = dataclasses.replace(cfg, output_dir=f"{cfg.output_dir}/beta_{beta:g}")
            model, tok, held_out, _ = align.train_dpo(run, train_pairs, eval_pairs, beta=beta,
                                                      listeners=listeners_for(beta) if listeners_for else None)
            done[beta] = dpo_point(model, tok, beta, held_out, eval_pairs)
            del model
        rows.append(done[beta])
    return rows


def length_reward(completions, **_) -> list[float]:
    """A reward that can be gamed: it pays for words, min(words, LENGTH_TARGET) / LENGTH_TARGET, whatever they
    say ("Let me think about this sum carefully" earns 0.7; "10", right or wrong, earns 0.1). A stand-in for a
    reward model that learned 'longer looks more helpful' from its pairs."""
    return [min(len(t.split()), LENGTH_TARGET) / LENGTH_TARGET for t in align.completion_texts(completions)]


def grpo_probe(model, tokenizer, tests: list[dict], reward, max_new_tokens: int) -> dict:
    """A GRPO policy on held-out sums (align.sums rows), greedy: the mean of `reward` (the one it was trained on),
    the true accuracy (align.arithmetic_reward), the mean answer length in words, and policy_kl on its answers."""
    tests = check_conversations("tests", tests, ("prompt",))
    if not all(isinstance(t.get("result"), numbers.Real) for t in tests):
        raise DataError("tests: each row needs its 'result' (a number), as align.sums makes them", field="tests")
    if not callable(reward):
        raise ConfigError("reward", reward, "a reward function (completions, **columns) -> list of floats")
    prompts = [tokenizer.apply_chat_template(t["prompt"], tokenize=False, add_generation_prompt=True) for t in tests]
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    results = [t["result"] for t in tests]
    n = len(tests)
    return {"reward": sum(reward(answers, result=results)) / n,
            "accuracy": sum(align.arithmetic_reward(answers, results)) / n,
            "words": sum(len(a.split()) for a in answers) / n,
            "kl": policy_kl(model, tokenizer, [t["prompt"] for t in tests], answers), "answers": answers}


def describe_beta_sweep(rows: list[dict], steps: int) -> str:
    """What a β sweep (dpo_beta_sweep's rows) shows, in sentences worded by its numbers."""
    rows = sorted(_rows("rows", rows, ("beta", "kl", "accuracy", "log_ratio_margin")), key=lambda r: r["beta"])
    if len(rows) < 2:
        return "One β only: nothing to compare (give dpo_betas two or more values)."
    lo, hi = rows[0], rows[-1]
    kls = ", ".join(f"{r['kl']:.4f} at β={r['beta']:g}" for r in rows)
    if all(a["kl"] > b["kl"] for a, b in zip(rows, rows[1:])):
        out = [f"The policy's KL to the reference falls as β rises ({kls} nats a token): the smallest β let it "
               "move furthest from the reference, the largest kept it closest."]
    else:
        out = [f"The KL to the reference does not fall steadily as β rises here ({kls} nats a token), so this run "
               f"does not show β's trade-off: after {steps} steps the runs have barely parted. Adam makes each early "
               "step about the same size whatever β; β brakes only once β times the log-ratio margin is large "
               "enough to saturate the loss. More steps (dpo_steps) let it show."]
    if all(a["log_ratio_margin"] > b["log_ratio_margin"] for a, b in zip(rows, rows[1:])):
        out.append(f"The held-out log-ratio margin (TRL's margin / β) shrinks from {lo['log_ratio_margin']:+.2f} at "
                   f"β={lo['beta']:g} to {hi['log_ratio_margin']:+.2f} at β={hi['beta']:g}: a large β stops pushing "
                   "the two answers apart sooner.")
    else:
        out.append("The held-out log-ratio margin (TRL's margin / β) does not shrink steadily with β here ("
                   + ", ".join(f"{r['log_ratio_margin']:+.2f}" for r in rows) + ").")
    accs = [r["accuracy"] for r in rows]
    out.append(f"Held-out accuracy {min(accs):.0%} to {max(accs):.0%} across the β values: "
               + ("the same ranking of the pairs, reached with more or less movement." if max(accs) - min(accs) <= 0.125
                  else "β changed which pairs end up ranked right, not only how far the policy moved."))
    return " ".join(out)


def describe_gaming(before: dict, free: dict, held: dict, beta: float, steps: int) -> str:
    """What GRPO on a gameable reward shows: `before` (the base: reward, accuracy), `free` (trained with β = 0)
    and `held` (trained with KL weight `beta`), each grpo_probe's numbers; worded by them."""
    before, free, held = (_rows(n, [r], ("reward", "accuracy"))[0] for n, r in
                          (("before", before), ("free", free), ("held", held)))
    _rows("free", [free, held], ("kl",))
    rose = free["reward"] - before["reward"]
    out = [f"With β = 0 the gamed reward went {before['reward']:.2f} -> {free['reward']:.2f} on held-out sums "
           f"and the true accuracy {before['accuracy']:.0%} -> {free['accuracy']:.0%}."]
    if rose > 0.05 and free["accuracy"] <= before["accuracy"]:
        out.append("The policy earns more of what the reward pays for while getting no more sums right: that is "
                   "reward hacking, learned in " + f"{steps} steps.")
    elif rose > 0.05:
        out.append("The reward rose and the accuracy rose with it: in this run the gamed reward and the task still "
                   "pulled the same way; with more steps (hack_steps) the reward can keep rising after accuracy stops.")
    else:
        out.append(f"In {steps} steps the gamed reward barely moved: too few to show hacking; raise hack_steps.")
    if held["kl"] < free["kl"] and held["reward"] <= free["reward"]:
        out.append(f"With the KL penalty (β = {beta:g}) the policy stayed nearer the reference (KL {held['kl']:.4f} "
                   f"vs {free['kl']:.4f} nats a token) and took less of the gamed reward ({held['reward']:.2f}, true "
                   f"accuracy {held['accuracy']:.0%}): the penalty is the price of moving away, which bounds how far a "
                   "policy chases a flawed reward.")
        if held["accuracy"] < before["accuracy"]:
            out.append("It still lost accuracy: the penalty slows the chase; it does not make the reward right.")
    else:
        out.append(f"The KL penalty (β = {beta:g}) made no clear difference here (KL {held['kl']:.4f} vs "
                   f"{free['kl']:.4f}, gamed reward {held['reward']:.2f} vs {free['reward']:.2f}): its pull grows "
                   "with the distance moved, which is small this early; raise hack_steps or hack_beta.")
    return " ".join(out)


def _rows(field: str, rows, keys: tuple) -> list[dict]:
    """Rows (dicts) that each hold finite numbers under `keys`."""
    if isinstance(rows, (str, dict)) or not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{field}: a list of dicts with {list(keys)} is needed, not {type(rows).__name__}", field=field)
    for r in rows:
        bad = [k for k in keys if isinstance(r.get(k), bool) or not isinstance(r.get(k), numbers.Real)
               or not math.isfinite(r[k])]
        if bad:
            raise DataError(f"{field}: a row has {bad[0]}={r.get(bad[0])!r}: a finite number is needed", field=field)
    return list(rows)
