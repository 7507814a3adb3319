"""Classification by a decoder that answers with a label word: no head, no new parameters. The prompt asks the
question (with `shots` solved examples before it for few-shot), and the answer is the label whose word the model
finds most probable after the prompt: log p(word | prompt) summed over the word's tokens, every label scored,
so the answer is always one of the labels (nothing is parsed from free text)."""
from __future__ import annotations

import copy

import torch

from ftlab.errors import ConfigError
from ftlab.labelled import check_labelled

SYSTEM = "Answer with one word."
QUESTION = ("Which part of speech is the word that this dictionary definition defines?\n"
            "Definition: {text}\nAnswer with one word: {choices}.")


def prompt(tok, text: str, labels: list[str], shots: list[dict] = (), question: str = QUESTION) -> str:
    """The chat-templated prompt, ending where the assistant's answer starts; each shot is a user turn and the
    assistant's label word."""
    if "{text}" not in question:
        raise ConfigError("question", question, "a question with {text} where the input goes ({choices}: the labels)")
    choices = ", ".join(labels[:-1]) + f" or {labels[-1]}"
    messages = [{"role": "system", "content": SYSTEM}]  # short: SmolLM2's default system prompt is longer
    for s in shots:
        messages += [{"role": "user", "content": question.format(text=s["text"], choices=choices)},
                     {"role": "assistant", "content": s["label"]}]
    messages.append({"role": "user", "content": question.format(text=text, choices=choices)})
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def label_word_records(records: list[dict], labels: list[str], question: str = QUESTION) -> list[dict]:
    """Labelled records as TRL's conversational prompt/completion pairs for ftlab.train.finetune: the prompt is
    the one classify_by_label_word scores (same system line, question and chat template), the completion is the
    label word, so fine-tuning teaches exactly the answer that is scored (the loss is on the completion only)."""
    records = check_labelled(records, labels, split="train")
    if "{text}" not in question:
        raise ConfigError("question", question, "a question with {text} where the input goes ({choices}: the labels)")
    choices = ", ".join(labels[:-1]) + f" or {labels[-1]}"
    return [{"prompt": [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": question.format(text=r["text"], choices=choices)}],
             "completion": [{"role": "assistant", "content": r["label"]}]} for r in records]


def _shared_prefix(rows: list[list[int]]) -> int:
    """How many leading tokens every row has in common (the system prompt, the shots, the question's start)."""
    n = min(map(len, rows)) - 1  # leave each row at least one token of its own
    for i in range(max(n, 0)):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return max(n, 0)


@torch.no_grad()
def label_word_scores(model, tok, prompts: list[str], labels: list[str]) -> torch.Tensor:
    """[len(prompts), len(labels)]: log p(label word | prompt), summed over the word's tokens.

    What costs is reading prompts, so each token is read once: the part every prompt shares (the system prompt,
    the few-shot examples) once for all, each prompt's own rest once, and the label words continue it side by
    side from its cached keys and values. Right padding after a short word changes nothing before it (causal)."""
    model.eval()
    device = next(model.parameters()).device
    words = [tok(w, add_special_tokens=False)["input_ids"] for w in labels]
    width = max(map(len, words))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cont = torch.tensor([w + [pad] * (width - len(w)) for w in words], device=device)
    keep = torch.tensor([[j < len(w) for j in range(width)] for w in words], device=device)
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = _shared_prefix(rows)
    prefix = model(input_ids=torch.tensor([rows[0][:shared]], device=device), use_cache=True,
                   logits_to_keep=1).past_key_values if shared else None
    out = []
    for row in rows:
        cache = copy.deepcopy(prefix) if prefix is not None else None
        own = model(input_ids=torch.tensor([row[shared:]], device=device), past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        cache = own.past_key_values
        cache.batch_repeat_interleave(len(labels))
        mask = torch.ones(len(labels), len(row) + width, dtype=torch.long, device=device)
        rest = model(input_ids=cont, past_key_values=cache, attention_mask=mask).logits.float()
        # the word's first token is predicted by the prompt's last position, each later one by the word itself
        logits = torch.cat([own.logits[:, -1:].float().expand(len(labels), 1, -1), rest[:, :-1]], 1)
        logp = torch.log_softmax(logits, -1).gather(-1, cont[..., None])[..., 0]
        out.append((logp * keep).sum(-1))
    return torch.stack(out).cpu()


def classify_by_label_word(model, tok, records: list[dict], labels: list[str], shots: list[dict] = (),
                           question: str = QUESTION) -> list[int]:
    """The class id of each record: the label word the decoder finds most probable (zero-shot without `shots`)."""
    records = check_labelled(records, labels, split="test")
    shots = check_labelled(list(shots), labels, split="shots") if shots else []
    prompts = [prompt(tok, r["text"], labels, shots, question) for r in records]
    return label_word_scores(model, tok, prompts, labels).argmax(-1).tolist()
