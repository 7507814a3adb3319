"""Conversational prompt/completion records as the tensors a training loop and a held-out loss read: the
prompt's and the padding's labels masked, so the loss is on the completion only (what TRL's SFTTrainer does
inside). ftlab.data re-exports `loss_batches`; ftlab.evaluation scores held-out records with it."""
from __future__ import annotations

import torch

from ftlab.errors import DataError, check_int
from ftlab.records import check_conversations, check_tokenizer


def loss_batches(tokenizer, records: list[dict], batch_size: int) -> list[dict]:
    """Conversational prompt/completion records as tensors for a hand-written training loop: input_ids,
    attention_mask and labels, with the prompt's and the padding's labels set to -100 so the loss is on the
    completion only. This is what TRL's SFTTrainer does inside; lab 02 writes the loop out, so it needs the
    same batches outside the trainer (TRL has no public function that returns them). records: a non-empty list
    of {"prompt": [messages], "completion": [messages]}, as to_prompt_completion(records) (chat=True) makes them."""
    check_tokenizer(tokenizer)
    try:
        records = check_conversations("records", records)
    except DataError as e:
        raise DataError(f"{e}. loss_batches reads conversational prompt/completion records: make them from task "
                        "records with to_prompt_completion(records) (chat=True, the default)",
                        field="records") from None
    batch_size = check_int("batch_size", batch_size, 1)
    rows = [_tokenized(tokenizer, r) for r in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        n = max(len(ids) for ids, _ in chunk)
        batches.append({"input_ids": torch.tensor([ids + [pad] * (n - len(ids)) for ids, _ in chunk]),
                        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (n - len(ids)) for ids, _ in chunk]),
                        "labels": torch.tensor([lab + [-100] * (n - len(lab)) for _, lab in chunk])})
    return batches


def _tokenized(tokenizer, record: dict) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation: the labels are -100 over the prompt (the assistant turn opened)."""
    prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[:len(p_ids)] != p_ids:
        raise DataError("the chat template renders the prompt differently inside the full conversation")
    return ids, [-100] * len(p_ids) + ids[len(p_ids):]
