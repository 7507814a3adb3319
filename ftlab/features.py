"""Feature extraction: a frozen pretrained encoder turns each text into one vector (the mean of its last hidden
states over the real tokens), and a linear classifier (scikit-learn's logistic regression) is trained on those
vectors. Nothing in the encoder changes; only the classifier's (hidden + 1) × classes numbers are learned."""
from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ftlab.errors import check_int
from ftlab.labelled import check_labelled


@torch.no_grad()
def embed(model, tok, texts: list[str], batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """[len(texts), hidden] mean-pooled embeddings from the model's encoder (for a ...ForSequenceClassification
    model, its base: the head is not used). Padding is left out of the mean, as sentence-transformers does."""
    base = getattr(model, "base_model", model)
    base.eval()
    device = next(base.parameters()).device
    out = []
    for i in range(0, len(texts), check_int("batch_size", batch_size, 1)):
        enc = tok(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt").to(device)
        hidden = base(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
    return np.concatenate(out)


def linear_probe(model, tok, train: list[dict], test: list[dict], labels: list[str], seed: int = 0,
                 max_length: int = 64) -> dict:
    """Logistic regression on frozen embeddings: {"predictions" (class ids of `test`), "seconds" (embedding the
    training texts and fitting), "trainable" (the classifier's weights and biases)}."""
    train = check_labelled(train, labels, split="train")
    test = check_labelled(test, labels, split="test")
    ids = {label: i for i, label in enumerate(labels)}
    t0 = time.perf_counter()
    x = embed(model, tok, [r["text"] for r in train], max_length=max_length)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(x, [ids[r["label"]] for r in train])
    seconds = time.perf_counter() - t0
    pred = clf.predict(embed(model, tok, [r["text"] for r in test], max_length=max_length))
    return {"predictions": [int(p) for p in pred], "seconds": seconds,
            "trainable": int(clf.coef_.size + clf.intercept_.size)}
