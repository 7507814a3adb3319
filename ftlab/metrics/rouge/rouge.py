"""ROUGE as a local `evaluate` module (evaluate.load("rouge") needs the hub; this folder does not).

Wraps Google's `rouge_score` the way the hub's module does: F-measure of rouge1, rouge2, rougeL
and rougeLsum (rougeLsum splits on newlines and scores the union LCS over sentences), stemmed.
"""
import datasets
import evaluate
from rouge_score import rouge_scorer


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE F-measure (rouge_score, stemmed)", citation="Lin, 2004", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=True):
        rouge_types = rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(rouge_types=rouge_types, use_stemmer=use_stemmer)
        per_example = {t: [] for t in rouge_types}
        for ref, pred in zip(references, predictions):
            score = scorer.score(ref, pred)
            for t in rouge_types:
                per_example[t].append(score[t].fmeasure)
        if use_aggregator:  # the plain mean: deterministic, unlike the hub module's bootstrap median
            return {t: sum(v) / max(len(v), 1) for t, v in per_example.items()}
        return per_example
