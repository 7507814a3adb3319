"""F1 as a local `evaluate` module (the hub's "f1" is fetched from the hub, so it fails offline).

Per class c: precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2·P·R/(P+R) (0 when the class is never
predicted nor present). average="macro" is their plain mean over the classes seen in predictions or references,
so a rare class counts as much as a frequent one: a model that always answers the majority class gets a high
accuracy and a low macro-F1. average="micro" equals accuracy for single-label classification."""
import datasets
import evaluate


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 per class, averaged", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, average="macro", labels=None):
        classes = sorted(set(labels if labels is not None else [*predictions, *references]))
        per_class = []
        for c in classes:
            tp = sum(1 for p, r in zip(predictions, references) if p == c and r == c)
            fp = sum(1 for p, r in zip(predictions, references) if p == c and r != c)
            fn = sum(1 for p, r in zip(predictions, references) if p != c and r == c)
            per_class.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        if average == "micro":
            hits = sum(1 for p, r in zip(predictions, references) if p == r)
            return {"f1": hits / len(references) if references else 0.0}
        if average is None:
            return {"f1": per_class}
        return {"f1": sum(per_class) / len(per_class) if per_class else 0.0}
