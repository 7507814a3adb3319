"""Exact match as a local `evaluate` module: the share of predictions equal to their reference after
the normalisation asked for (case, punctuation, surrounding and repeated whitespace), as the hub's
"exact_match" module does it."""
import re
import string

import datasets
import evaluate


class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of exact matches after normalisation", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, ignore_case=True, ignore_punctuation=False, per_example=False):
        def norm(s: str) -> str:
            if ignore_case:
                s = s.lower()
            if ignore_punctuation:
                s = s.translate(str.maketrans("", "", string.punctuation))
            return re.sub(r"\s+", " ", s).strip()
        hits = [float(norm(p) == norm(r)) for p, r in zip(predictions, references)]
        out = {"exact_match": sum(hits) / len(hits) if hits else 0.0}
        if per_example:
            out["per_example"] = hits
        return out
