"""Perplexity as a local `evaluate` module. The hub's module takes a model id and loads the model itself;
this one takes the model and tokenizer already in memory (a fine-tuned model needs no saving first).

perplexities: exp(mean negative log-likelihood of each text's tokens), one per text;
mean_perplexity: their plain mean (the hub module's summary); corpus_perplexity: exp of the mean over all
tokens of all texts (long texts weigh more; the usual language-modelling figure).
"""
import math

import datasets
import evaluate
import torch


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="perplexity of a causal LM on texts", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions, model=None, tokenizer=None, max_length=256):
        if model is None or tokenizer is None:
            raise ValueError("perplexity needs model= and tokenizer= (the model in memory)")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        per_text, nll, n = [], 0.0, 0
        with torch.no_grad():
            for text in predictions:
                ids = tokenizer(text, return_tensors="pt", truncation=True,
                                max_length=max_length)["input_ids"].to(device)
                if ids.shape[1] < 2:
                    continue
                loss = model(input_ids=ids, labels=ids).loss.float().item()
                per_text.append(math.exp(loss))
                nll, n = nll + loss * (ids.shape[1] - 1), n + ids.shape[1] - 1
        model.train(was_training)
        return {"perplexities": per_text, "mean_perplexity": sum(per_text) / max(len(per_text), 1),
                "corpus_perplexity": math.exp(nll / max(n, 1))}
