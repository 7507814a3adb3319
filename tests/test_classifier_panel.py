"""The encoder's memory panel: set .value on its widgets, read the estimate and the inline message."""
import pytest

from ftlab.memory import estimate_memory
from ftlab.widgets import ClassifierPanel


def test_the_panel_estimates_what_the_calculator_does_and_follows_every_change():
    p = ClassifierPanel(num_labels=4, seq_len=64)
    want = estimate_memory("minilm-l6", task="classification", method="lora", num_labels=4, batch_size=16, seq_len=64,
                           lora_r=8, lora_targets=["query", "value"], gpu="T4")
    assert p.error is None and p.estimate.total_gib == pytest.approx(want.total_gib)
    assert "trainable" in p.message.value and "fits on T4" in p.message.value
    assert p.fields["top_k_layers"].layout.display == "none" and p.fields["lora_r"].layout.display is None
    before = p.estimate.components["activations"]
    p.fields["seq_len"].value = 256
    assert p.estimate.components["activations"] > 4 * before  # the attention scores grow with seq²
    p.fields["method"].value = "full"
    assert p.estimate.trainable_params == p.estimate.details["total_params"]
    assert p.fields["lora_r"].layout.display == "none"
    p.fields["gpu"].value = "this machine (CPU)"
    assert p.arguments["device"] == "cpu" and p.estimate.components["baseline"] > 0
    assert p.bar.fig.layout.title.text.startswith(f"{p.estimate.total_gib:.2f} GiB")


@pytest.mark.parametrize("field, value", [("seq_len", 4096), ("num_labels", 1), ("lora_targets", "q_proj"),
                                          ("model", "smollm2-135m-instruct"), ("batch_size", 0)])
def test_a_bad_value_is_named_inline_and_the_last_estimate_stays(field, value):
    p = ClassifierPanel()
    good = p.estimate
    p.fields[field].value = value
    assert p.error is not None and p.estimate is good
    assert f"<b>{field}</b>" in p.message.value and "⚠" in p.message.value
