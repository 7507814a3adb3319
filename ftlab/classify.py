"""Sequence classification: a pretrained encoder (or decoder) with a new head, trained by any method of the method
table through transformers' Trainer, and scored by accuracy and macro-F1 (ftlab's offline `evaluate` modules).

    model, tok = load_classifier("minilm-l6", labels)           # BERT-style: a linear head on the pooled [CLS]
    model = with_method(model, "lora", lora_targets=["query", "value"])   # the method table, as for decoders
    seconds = train_classifier(model, tok, train, labels, epochs=3)
    scores = score(predict(model, tok, test, labels), test, labels)    # {"accuracy", "macro_f1"}

A ...ForSequenceClassification model ends in a linear layer (hidden → num_labels) that starts random: every method
trains it (peft keeps a trained copy of it, `modules_to_save`; BitFit and top-k unfreeze it). A decoder's head
reads the hidden state of the last real token (the only one that has seen the whole input).
"""
from __future__ import annotations

import tempfile
import time

import torch

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, check_int, check_number
from ftlab.evaluation import load_metric
from ftlab.labelled import check_labelled, check_labels, check_num_labels
from ftlab.method_table import FULL
from ftlab.methods import METHODS, apply_method
from ftlab.models import load_model
from ftlab.models.presets import find_preset


def load_classifier(model: str = "minilm-l6", labels: list[str] | None = None, num_labels: int | None = None):
    """(model, tokenizer): `model` (a preset, hub id or folder) with a new classification head of one output per
    label; the head's outputs are named by `labels` (config.id2label). Give labels, num_labels or both (equal)."""
    if labels is None:
        n = check_int("num_labels", num_labels, 2)
        labels = [f"LABEL_{i}" for i in range(n)]
    labels = check_labels(labels)
    n = check_num_labels(num_labels, labels)
    clf, tok = load_model(model, for_classification=n, bits=32)
    clf.config.id2label = dict(enumerate(labels))
    clf.config.label2id = {label: i for i, label in enumerate(labels)}
    return clf, tok


def is_encoder(model) -> bool:
    """Whether a loaded model, or a preset name, is a bidirectional encoder (BERT and its kin)."""
    if isinstance(model, str):
        preset = find_preset(model, encoders=True)
        return bool(preset and preset.encoder)
    return not getattr(model.config, "is_decoder", False) and model.config.model_type in (
        "bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert", "mpnet")


def randomly_initialised(model, seed: int = 0):
    """The same architecture and head with fresh random weights (no pretraining): the baseline that shows what
    pretraining is worth (ULMFiT's point)."""
    torch.manual_seed(check_int("seed", seed, 0))
    fresh = type(model)(model.config)
    fresh.ftlab_info = {**getattr(model, "ftlab_info", {}), "source": "random initialisation"}
    return fresh.eval()


def with_method(model, method: str = "full", **knobs):
    """`model` made trainable as the method table's row `method` says (ftlab.methods.apply_method), its knobs as
    TrainConfig fields (lora_r, lora_targets, top_k_layers, num_virtual_tokens, ...)."""
    bad = [k for k in knobs if k not in TrainConfig.__dataclass_fields__]
    if bad:
        raise ConfigError(bad[0], knobs[bad[0]], "a TrainConfig field (lora_r, lora_targets, top_k_layers, ...)")
    return apply_method(model, TrainConfig(method=method, **knobs))


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _Encoded(torch.utils.data.Dataset):
    """Tokenised records with their class ids, as the Trainer's data collator pads them."""

    def __init__(self, tok, records, labels, max_length):
        ids = {label: i for i, label in enumerate(labels)}
        enc = tok([r["text"] for r in records], truncation=True, max_length=max_length)
        self.rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                      "labels": ids[r["label"]]} for i, r in enumerate(records)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _check_head(model, labels) -> None:
    n = getattr(model.config, "num_labels", None)
    if n != len(labels):
        raise ConfigError("num_labels", n, f"{len(labels)}, the number of labels in the data ({list(labels)}): "
                          "load the model with load_classifier(model, labels)")


def train_classifier(model, tok, train: list[dict], labels: list[str], *, epochs: float = 3, learning_rate=None,
                     batch_size: int = 16, max_length: int = 64, seed: int = 0, method: str | None = None) -> float:
    """Train `model` (its trainable parameters, as a method left them) on labelled records with transformers'
    Trainer and cross-entropy over the classes; returns the seconds it took. learning_rate: by default the
    method row's typical rate (`method`, else full fine-tuning's)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments  # lazy: Trainer imports accelerate
    train = check_labelled(train, labels, split="train")
    _check_head(model, labels)
    epochs = check_number("epochs", epochs, 0, lo_open=True)
    lr = (METHODS[method] if method else FULL).lr if learning_rate is None else check_number("learning_rate", learning_rate, 0,
                                                                                   1, lo_open=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, learning_rate=lr,
                                 per_device_train_batch_size=check_int("batch_size", batch_size, 1), seed=seed,
                                 data_seed=seed, warmup_steps=0.1, lr_scheduler_type="linear", weight_decay=0.01,
                                 save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
                                 use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, processing_class=tok,
                          train_dataset=_Encoded(tok, train, labels, check_int("max_length", max_length, 8)),
                          data_collator=DataCollatorWithPadding(tok))
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    model.eval()
    return seconds


@torch.no_grad()
def predict(model, tok, records: list[dict], labels: list[str], batch_size: int = 32,
            max_length: int = 64) -> list[int]:
    """The predicted class id of each record (the head's highest score)."""
    records = check_labelled(records, labels, split="test")
    _check_head(model, labels)
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(records), batch_size):
        enc = tok([r["text"] for r in records[i:i + batch_size]], truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt").to(device)
        out += model(**enc).logits.argmax(-1).tolist()
    return out


def score(predictions: list[int], records: list[dict], labels: list[str]) -> dict:
    """{"accuracy", "macro_f1"} of predicted class ids against the records' labels (ftlab/metrics/accuracy and
    f1: local `evaluate` modules, so scoring works offline)."""
    ids = {label: i for i, label in enumerate(labels)}
    refs = [ids[r["label"]] for r in check_labelled(records, labels, split="test")]
    if len(predictions) != len(refs):
        raise ConfigError("predictions", f"{len(predictions)} predictions", f"one per record ({len(refs)})")
    acc = load_metric("accuracy").compute(predictions=predictions, references=refs)["accuracy"]
    f1 = load_metric("f1").compute(predictions=predictions, references=refs, average="macro",
                                   labels=list(range(len(labels))))["f1"]
    return {"accuracy": acc, "macro_f1": f1}
