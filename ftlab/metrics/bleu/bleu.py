"""BLEU as a local `evaluate` module (the hub's "bleu" needs network; this folder does not).

Corpus BLEU (Papineni et al., 2002): the geometric mean of modified n-gram precisions (n = 1..4) over
the whole corpus, times a brevity penalty for predictions shorter than their references. Computed by
NLTK's corpus_bleu (NLTK comes with rouge_score); tokens are words and punctuation marks, lowercased
when asked. Output keys as the hub module's: bleu, precisions, brevity_penalty, length_ratio,
translation_length, reference_length.
"""
import math
import re

import datasets
import evaluate
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, modified_precision

_TOKEN = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str, lowercase: bool) -> list[str]:
    return _TOKEN.findall(text.lower() if lowercase else text)


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="corpus BLEU (NLTK), up to 4-grams", citation="Papineni et al., 2002", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, max_order=4, smooth=False, lowercase=False):
        hyps = [_tokens(p, lowercase) for p in predictions]
        refs = [[_tokens(r, lowercase)] for r in references]
        weights = tuple([1.0 / max_order] * max_order)
        smoothing = SmoothingFunction().method1 if smooth else SmoothingFunction().method0
        bleu = corpus_bleu(refs, hyps, weights=weights, smoothing_function=smoothing) if any(hyps) else 0.0
        precisions = []
        for n in range(1, max_order + 1):
            num = den = 0
            for ref, hyp in zip(refs, hyps):
                p = modified_precision(ref, hyp, n)
                num, den = num + p.numerator, den + p.denominator
            precisions.append(num / den if den else 0.0)
        hyp_len, ref_len = sum(map(len, hyps)), sum(len(r[0]) for r in refs)
        ratio = hyp_len / ref_len if ref_len else 0.0
        bp = 1.0 if ratio > 1 else (math.exp(1 - 1 / ratio) if ratio > 0 else 0.0)
        return {"bleu": float(bleu), "precisions": precisions, "brevity_penalty": bp, "length_ratio": ratio,
                "translation_length": hyp_len, "reference_length": ref_len}
