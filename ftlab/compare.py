"""Every method on the same model, data and number of steps: one row of numbers per method.

Each method gets a freshly loaded base (methods adapt their base in place), its own typical learning
rate (`Method.lr`: one rate for all would favour some methods by accident), and the same training,
validation and test examples. A method that cannot run on this model (BitFit without biases) or this
machine gets a row that says why instead of numbers. The run and its numbers: ftlab.runs.run_and_measure.
"""
from __future__ import annotations

from dataclasses import replace

from ftlab.errors import ConfigError, check_int, check_strings
from ftlab.method_table import LORA, METHODS
from ftlab.methods import check_setup
from ftlab.results import inside
from ftlab.runs import check_config, run_and_measure

# Variants of a table row that the comparison shows separately: name -> (method, base bits)
VARIANTS = {"lora_8bit": (LORA.name, 8)}


def base_bits(method: str, cfg) -> int:
    """The base precision a comparison gives a method: the one it needs (QLoRA's 4), at least 16 for a method that
    trains the base's own weights (they cannot be quantised), else cfg.bits."""
    m = METHODS[method]
    if m.needs_bits:
        return m.needs_bits
    return max(cfg.bits, 16) if m.trains_base else cfg.bits


def variant(name: str, cfg):
    """The TrainConfig for one comparison entry (a METHODS name or a VARIANTS name)."""
    check_config(cfg)
    if not isinstance(name, str) or (name not in METHODS and name not in VARIANTS):  # a list is not a name
        raise ConfigError("methods", name, f"names from {list(METHODS) + list(VARIANTS)}")
    method, bits = VARIANTS.get(name, (name, None))
    return replace(cfg, method=method, bits=bits or base_bits(method, cfg), learning_rate=METHODS[method].lr,
                   output_dir=str(inside(cfg.output_dir, name)))


def compare_methods(cfg, names: list[str], train_records, val_records, test_records, *, listeners=None,
                    max_new_tokens: int = 24) -> list[dict]:
    """Train each named method with cfg's model, steps, batch and sequence length; measure and score it.

    Listeners receive the training events of each run with "method" added. Rows: method, family,
    trainable (count and %), estimated GPU memory (cfg.gpu), measured memory, seconds a step, train and
    validation loss, validation token accuracy (TRL's, from the same evaluation pass: the task metric that
    costs nothing extra), the optimizer state's bytes a parameter, ROUGE-L of greedy answers to `test_records`
    (keep them few on a CPU: generation is the slowest part), or "skipped" with the reason. Methods that start as
    their base share the validation pass before training of the first such method with the same base precision
    ("val_before_from" names it).
    """
    check_config(cfg)
    # every name is checked before the first run trains: a typo in the last would cost all the runs before it
    names = check_strings("names", names)
    for name in names:
        variant(name, cfg)
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:  # two runs of one name would write to one output folder
        raise ConfigError("names", names, f"distinct names ({twice[0]!r} is listed twice)")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 1)
    rows = []
    # the validation pass before training, per base precision, of the methods that start as their base
    # (Method.starts_as_base: the same logits before any step, checked in tests/test_methods.py): run once
    base_before = {}
    for name in names:
        c = variant(name, cfg)
        m = METHODS[c.method]
        row = {"method": name, "family": m.family, "summary": m.summary, "learning_rate": c.learning_rate}
        try:
            check_setup(c)
        except ValueError as e:  # e.g. BitFit on a model without biases: say why, keep going
            rows.append({**row, "skipped": str(e)})
            continue
        key = c.effective_bits if m.starts_as_base else None
        shared = base_before.get(key) if key is not None else None
        row.update(run_and_measure(c, train_records, val_records, test_records, listeners=listeners, label=name,
                                   max_new_tokens=max_new_tokens, eval_before=shared is None))
        if shared:
            row.update(val_loss_before=shared[0], val_accuracy_before=shared[1], val_before_from=shared[2])
        elif key is not None:
            base_before[key] = (row["val_loss_before"], row["val_accuracy_before"], name)
        rows.append(row)
    return rows
