"""The memory calculator against GPU measurements (shared/calibration rows, copied into
ftlab/measured/, and ftlab's own sweep), plus its arithmetic and its errors."""
import statistics

import pytest

from ftlab.calibration import compare
from ftlab.memory import GPUS, estimate_memory, max_batch_size, max_seq_len, count_trainable
from ftlab.models import PRESETS


@pytest.mark.parametrize("which,rows", [("shared", 26), ("ftlab", 38)])
def test_measured_rows_within_10_percent_and_5_at_the_median(which, rows):
    c = compare(which)
    assert len(c) == rows
    bad = [(x["label"], round(x["error_total"], 3), round(x["error_peak"], 3)) for x in c
           if abs(x["error_total"]) > 0.10 or abs(x["error_peak"]) > 0.10]
    assert not bad, bad
    assert statistics.median(abs(x["error_total"]) for x in c) < 0.05


def test_trainable_parameter_counts_match_peft():
    # peft's counts, as measured in the calibration rows
    assert count_trainable(PRESETS["qwen2.5-0.5b-instruct"].arch, "lora", 16) == 8_798_208
    assert count_trainable(PRESETS["qwen2.5-0.5b-instruct"].arch, "lora", 16, ["q_proj", "v_proj"]) == 1_081_344
    assert count_trainable(PRESETS["llama-3.2-1b"].arch, "lora", 64) == 45_088_768
    assert count_trainable(PRESETS["qwen2.5-0.5b-instruct"].arch, "prompt_tuning", num_virtual_tokens=20) == 17_920


def test_components_add_up_and_trl_holds_no_logits():
    plain = estimate_memory("qwen2.5-0.5b-instruct", trainer="plain", batch_size=4, seq_len=512)
    trl = estimate_memory("qwen2.5-0.5b-instruct", trainer="trl", batch_size=4, seq_len=512)
    for e in (plain, trl):
        assert sum(e.components.values()) == pytest.approx(e.total_gib)
        assert set(e.components) >= {"weights", "adapters", "gradients", "optimizer", "activations", "logits",
                                     "cuda_context", "allocator"}
    assert plain.components["logits"] > 3 and trl.components["logits"] < 0.5  # 9.86 vs 5.07 GiB measured
    assert plain.total_gib > 1.6 * trl.total_gib


def test_mechanisms_move_the_estimate_the_right_way():
    base = dict(model="llama-3.1-8b", batch_size=4, seq_len=1024, trainer="trl")
    lora, qlora = estimate_memory(method="lora", **base), estimate_memory(method="qlora", **base)
    gc = estimate_memory(method="lora", gradient_checkpointing=True, **base)
    full = estimate_memory(method="full", **base)
    assert qlora.components["weights"] < 0.5 * lora.components["weights"]
    assert gc.components["activations"] < 0.3 * lora.components["activations"]
    assert full.total_gib > lora.total_gib
    assert estimate_memory(method="full", optimizer="adamw_8bit", **base).total_gib < full.total_gib
    assert estimate_memory(method="lora", bits=16, lora_r=64, **base).trainable_params == 4 * lora.trainable_params


def test_fits_and_solvers():
    e = estimate_memory("llama-3.1-8b", method="qlora", gradient_checkpointing=True, batch_size=1, seq_len=512, gpu="T4")
    assert e.fits and e.fits.left_gib > 0 and "fits on T4" in str(e.fits)
    assert not estimate_memory("llama-2-70b", method="full", gpu="A100-80GB").fits
    b = max_batch_size("qwen2.5-0.5b-instruct", "L4", method="lora", seq_len=512)
    assert b >= 1
    assert estimate_memory("qwen2.5-0.5b-instruct", method="lora", seq_len=512, batch_size=b, gpu="L4").fits
    assert not estimate_memory("qwen2.5-0.5b-instruct", method="lora", seq_len=512, batch_size=b + 1, gpu="L4").fits
    s = max_seq_len("smollm2-135m-instruct", "T4", method="lora", batch_size=1)
    assert s == 8192  # limited by the model's positions, not by memory


@pytest.mark.parametrize("kw,match", [
    ({"method": "lorra"}, "method='lorra' is not allowed: one of"),
    ({"bits": 3}, r"bits=3 is not allowed: one of \[32, 16, 8, 4\]"),
    ({"lora_r": 0}, "lora_r=0 is not allowed: an integer ≥ 1"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"seq_len": -1}, "seq_len=-1"),
    ({"seq_len": 9000}, r"seq_len=9000 is not allowed: at most 8172"),
    ({"gpu": "GTX-480"}, "gpu='GTX-480' is not allowed: one of"),
    ({"optimizer": "adam"}, "optimizer='adam'"),
    ({"trainer": "keras"}, "trainer='keras'"),
    ({"lora_targets": ["c_attn"]}, "lora_targets"),
    ({"method": "full", "bits": 4}, "bits=4 is not allowed"),
])
def test_bad_input_names_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        estimate_memory("smollm2-135m-instruct", **{"method": "prompt_tuning" if "seq_len" in kw else "lora", **kw})


def test_architecture_missing_a_number_is_named():
    with pytest.raises(ValueError, match="intermediate_size"):
        estimate_memory({"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10})


def test_every_gpu_has_memory_and_context():
    assert {"T4", "L4", "A10G", "RTX-3090", "RTX-4090", "A100-40GB", "A100-80GB", "H100-80GB"} <= set(GPUS)


def test_a_config_holds_the_set_up_and_a_second_value_is_refused():
    """estimate_memory(cfg) and count_trainable(cfg) read the config; a setting given beside it would be dropped
    in silence, so it is refused with its name."""
    from ftlab.config import TrainConfig
    cfg = TrainConfig(lora_r=4)
    assert estimate_memory(cfg).trainable_params == count_trainable(cfg) == count_trainable(cfg.model, "lora", 4)
    for call, field in [(lambda: estimate_memory(cfg, lora_r=8), "lora_r"),
                        (lambda: count_trainable(cfg, lora_r=0), "lora_r"),
                        (lambda: count_trainable(cfg.model, cfg, top_k_layers=1), "top_k_layers")]:
        with pytest.raises(ValueError, match=f"{field}=.*left out with a TrainConfig"):
            call()
