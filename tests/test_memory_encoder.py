"""The calculator for an encoder with a classification head (ftlab.memory_encoder): its parameter counts against
the models transformers builds and peft adapts, its activations against what autograd really saves, its bytes
against a loaded model's, and its refusals."""
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from ftlab.classify import load_classifier, trainable, with_method
from ftlab.errors import ConfigError, ModelNotFoundError
from ftlab.measure import saved_for_backward
from ftlab.memory import estimate_memory

GIB = 2**30
LABELS = ["a", "b", "c"]
KNOBS = {"full": {}, "lora": dict(lora_r=8, lora_targets=["query", "value"]), "lora_all": dict(lora_r=4),
         "lora_dense": dict(lora_r=4, lora_targets=["query", "key", "dense"]), "ia3": {}, "bitfit": {},
         "top_k": dict(top_k_layers=1)}


def _method(key):
    return "lora" if key.startswith("lora") else key


@pytest.fixture(scope="module")
def minilm():
    model, _ = load_classifier("minilm-l6", LABELS)
    return model


def _small(kind):
    torch.manual_seed(0)
    if kind == "bert":
        cfg = BertConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=160, num_attention_heads=4,
                         vocab_size=300, max_position_embeddings=64, num_labels=3)
        return cfg, BertForSequenceClassification(cfg)
    cfg = RobertaConfig(num_hidden_layers=2, hidden_size=48, intermediate_size=96, num_attention_heads=2,
                        vocab_size=250, max_position_embeddings=66, type_vocab_size=1, num_labels=3)
    return cfg, RobertaForSequenceClassification(cfg)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("key", list(KNOBS))
def test_trainable_and_total_parameters_are_the_models(kind, key):
    cfg, model = _small(kind)
    total = sum(p.numel() for p in model.parameters())
    adapted = with_method(model, _method(key), **KNOBS[key])
    est = estimate_memory(cfg, task="classification", method=_method(key), num_labels=3, seq_len=16, **KNOBS[key])
    assert est.details["total_params"] == total
    assert est.trainable_params == trainable(adapted), key


def test_the_minilm_preset_counts_as_the_loaded_model_and_its_weights_are_its_bytes(minilm):
    est = estimate_memory("minilm-l6", task="classification", num_labels=3, method="full", device="cpu")
    param_bytes = sum(p.numel() * p.element_size() for p in minilm.parameters())
    assert est.components["weights"] * GIB == param_bytes
    assert est.trainable_params == sum(p.numel() for p in minilm.parameters())
    assert est.components["gradients"] * GIB == param_bytes
    assert est.components["optimizer"] * GIB == 2 * param_bytes  # AdamW's two fp32 moments


def _saved_bytes(model, batch, seq):
    ids = torch.randint(1000, 2000, (batch, seq))
    return saved_for_backward(model, input_ids=ids, attention_mask=torch.ones_like(ids),
                              labels=torch.zeros(batch, dtype=torch.long))


@pytest.mark.parametrize("key", list(KNOBS))
def test_activations_are_what_autograd_saves(key):
    model, _ = load_classifier("minilm-l6", LABELS)
    model = with_method(model, _method(key), **KNOBS[key])
    for batch, seq in ((4, 32), (2, 96)):
        est = estimate_memory("minilm-l6", task="classification", method=_method(key), num_labels=3,
                              batch_size=batch, seq_len=seq, **KNOBS[key])
        measured = _saved_bytes(model, batch, seq)
        assert est.components["activations"] * GIB == pytest.approx(measured, rel=0.03), (key, batch, seq)


def test_cpu_and_gpu_totals_are_their_parts():
    cpu = estimate_memory("minilm-l6", task="classification", method="lora", lora_targets=["query", "value"],
                          device="cpu")
    gpu = estimate_memory("minilm-l6", task="classification", method="lora", lora_targets=["query", "value"],
                          gpu="T4")
    assert cpu.total_gib == pytest.approx(sum(cpu.components.values()))
    assert cpu.components["baseline"] > 0 and "cuda_context" not in cpu.components
    assert gpu.components["cuda_context"] > 0 and gpu.fits and gpu.fits.gpu == "T4"
    assert cpu.components["activations"] > gpu.components["activations"]  # the CPU's factor for freed heap
    wider = estimate_memory("minilm-l6", task="classification", method="lora", lora_targets=["query", "value"],
                            batch_size=32, gpu="T4")
    assert wider.components["activations"] == pytest.approx(8 * gpu.components["activations"])


@pytest.mark.parametrize("kw, field", [
    (dict(method="prefix_tuning"), "method"), (dict(method="dora"), "method"), (dict(bits=4), "bits"),
    (dict(gradient_checkpointing=True), "gradient_checkpointing"),
    (dict(num_gpus=2), "num_gpus"), (dict(num_labels=1), "num_labels"), (dict(seq_len=513), "seq_len"),
    (dict(lora_targets=["q_proj"]), "lora_targets"), (dict(lora_targets="q,v"), "lora_targets"),
    (dict(batch_size=0), "batch_size"), (dict(num_labels="4"), "num_labels"),
    (dict(top_k_layers=7, method="top_k"), "top_k_layers"),
    (dict(task="seq2seq"), "task"), (dict(lora_rank=8), "lora_rank"), (dict(optimizer="lion"), "optimizer"),
])
def test_bad_arguments_name_their_field(kw, field):
    with pytest.raises(ConfigError) as e:
        estimate_memory("minilm-l6", **{"task": "classification", **kw})
    assert e.value.field == field


def test_an_encoder_needs_the_task_and_a_decoder_refuses_it():
    with pytest.raises(ModelNotFoundError, match="task='classification'"):
        estimate_memory("minilm-l6")
    with pytest.raises(ConfigError, match="task='classification'"):
        estimate_memory(_small("bert")[0])
    with pytest.raises(ConfigError, match="causal language model") as e:
        estimate_memory("smollm2-135m-instruct", task="classification")
    assert e.value.field == "model"
    with pytest.raises(ConfigError) as e:
        estimate_memory({"model_type": "distilbert", "n_layers": 6}, task="classification")
    assert e.value.field == "model"


def test_cpu_estimate_against_the_measured_peak_rss():
    """Each measured row (scripts/measure_encoder_memory.py): full and top_k chose ENCODER_CPU's constants, the
    other rows only test them; the saved-for-backward count must match the formula closely everywhere."""
    import json
    from pathlib import Path
    path = sorted((Path(__file__).parent.parent / "ftlab" / "measured").glob("cpu_encoder_*.json"))[-1]
    rows = json.loads(path.read_text())["rows"]
    knobs = {"lora": dict(lora_r=8, lora_targets=["query", "value"]), "top_k": dict(top_k_layers=2)}
    assert len(rows) >= 10
    for r in rows:
        e = estimate_memory("minilm-l6", task="classification", method=r["method"], num_labels=4, batch_size=r["batch"],
                            seq_len=r["seq"], device="cpu", **knobs.get(r["method"], {}))
        over_baseline = e.total_gib - e.components["baseline"]
        tolerance = 0.15 if r["method"] in ("full", "top_k") else 0.20
        assert over_baseline == pytest.approx(r["measured_over_baseline_gib"], rel=tolerance), r
        raw = estimate_memory("minilm-l6", task="classification", method=r["method"], num_labels=4,
                              batch_size=r["batch"], seq_len=r["seq"], **knobs.get(r["method"], {}))
        assert raw.components["activations"] == pytest.approx(r["saved_for_backward_gib"], rel=0.02), r
