"""ftlab.serving: the bytes a method saves, interleaved timing, and mixed-adapter batches (LoRA through peft's
adapter_names, prompt tuning assembled from each adapter's virtual tokens), on a tiny random Llama."""
import copy
import time

import pytest
import torch
from peft import PeftModel

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError
from ftlab.methods import apply_method
from ftlab.serving import (BASE, mixed_generate, mixed_logits, perturb_lora_b, row_differences, saved_size,
                           soft_prompt_inputs, time_variants)
from ftlab.tuners import lora_config, prompt_tuning_config

TEXTS = ["Define the word: harbour", "Subject line please: the meeting moved to Friday at noon, bring the slides",
         "Hello", "Define the word: quay"]


@pytest.fixture
def enc(tokenizer):
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        yield tokenizer(TEXTS, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side


@pytest.fixture
def two_prompts(tiny_model):
    """Two soft prompts of different lengths (3 and 5 virtual tokens) on one frozen base."""
    torch.manual_seed(1)
    base = copy.deepcopy(tiny_model)  # a test may take both fixtures: each its own base
    model = apply_method(base, TrainConfig(method="prompt_tuning", num_virtual_tokens=3))
    model.add_adapter("b", prompt_tuning_config(TrainConfig(method="prompt_tuning", num_virtual_tokens=5), base))
    return model.eval()


@pytest.fixture
def two_loras(tiny_model):
    cfg = TrainConfig(method="lora", lora_r=4, lora_targets="q,v")
    base = copy.deepcopy(tiny_model)  # peft injects its layers into the base it is given
    model = apply_method(base, cfg)
    model.add_adapter("b", lora_config(cfg, base))
    perturb_lora_b(model, std=0.05, seed=3)
    return model.eval()


@pytest.mark.parametrize("method", ["lora", "prompt_tuning", "adapter", "full"])
def test_the_saved_file_holds_the_trainable_parameters_and_a_small_header(tiny_model, tmp_path, method):
    cfg = TrainConfig(method=method, num_virtual_tokens=4, adapter_size=8, lora_r=4)
    model = apply_method(tiny_model, cfg)
    row = saved_size(model, cfg, tmp_path / "saved")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert row["trainable"] == sum(p.numel() for p in trainable)
    assert row["bytes_per_parameter"] == 4 and row["trainable_bytes"] == 4 * row["trainable"]
    assert row["tensors"] == len(trainable)
    assert 0 <= row["file_bytes"] - row["trainable_bytes"] <= 300 * row["tensors"] + 64, row  # the JSON header only
    assert row["folder_bytes"] >= row["file_bytes"] and any(n.endswith(".safetensors") for n in row["files"])


def test_saved_size_refuses_what_it_cannot_measure(tiny_model, tmp_path):
    cfg = TrainConfig(method="lora")
    with pytest.raises(ConfigError, match="cfg="):
        saved_size(tiny_model, "lora", tmp_path / "x")
    with pytest.raises(ConfigError, match="model=") as e:
        saved_size(tiny_model, cfg, tmp_path / "x")  # never prepared: nothing trains
    assert e.value.field == "model"
    with pytest.raises(ConfigError, match="folder="):
        saved_size(apply_method(tiny_model, cfg), cfg, "")


def test_timing_is_interleaved_with_medians_and_ratios():
    order = []
    calls = {"fast": lambda: (order.append("fast"), time.sleep(0.002)),
             "slow": lambda: (order.append("slow"), time.sleep(0.02)),
             "mid": lambda: (order.append("mid"), time.sleep(0.008))}
    out = time_variants(calls, repeats=4, warmup=1)
    assert all(len(v["times_s"]) == 4 for v in out.values())
    assert out["fast"]["ratio"] == 1.0 and out["slow"]["ratio"] > out["mid"]["ratio"] > 1.5
    rounds = [order[i:i + 3] for i in range(3, len(order), 3)]  # after the warm-up round
    assert [r[0] for r in rounds] == ["fast", "slow", "mid", "fast"]  # the order rotates each round
    assert time_variants(calls, repeats=2, baseline="slow")["slow"]["ratio"] == 1.0


@pytest.mark.parametrize("kwargs,field", [({"calls": {}}, "calls"), ({"calls": {"a": 1}}, "calls"),
                                          ({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"),
                                          ({"baseline": "nope"}, "baseline")])
def test_timing_refuses_bad_arguments(kwargs, field):
    args = {"calls": {"a": lambda: None}, **kwargs}
    with pytest.raises(ConfigError) as e:
        time_variants(**args)
    assert e.value.field == field and field in str(e.value)


def test_perturbed_lora_changes_the_output_and_merging_keeps_it(tiny_model, enc):
    base = copy.deepcopy(tiny_model).eval()
    cfg = TrainConfig(method="lora", lora_r=4, lora_targets="all-linear")
    model = apply_method(tiny_model, cfg).eval()
    with torch.no_grad():
        same = (model(**enc).logits - base(**enc).logits).abs().max().item()
        assert same == 0.0  # B = 0: the adapter changes nothing yet
        assert perturb_lora_b(model, std=0.05) == 2 * 7  # 7 linear layers a block, 2 blocks
        unmerged = model(**enc).logits
        merged = copy.deepcopy(model).merge_and_unload()(**enc).logits
    assert (unmerged - base(**enc).logits).abs().max().item() > 1e-3
    assert (merged - unmerged).abs().max().item() < 1e-4
    with pytest.raises(ConfigError, match="std="):
        perturb_lora_b(model, std=0)
    with pytest.raises(ConfigError) as e:
        perturb_lora_b(base)
    assert e.value.field == "model"


def test_a_mixed_soft_prompt_batch_matches_each_row_alone(two_prompts, tokenizer, enc):
    rows = ["default", "b", BASE, "default"]
    diffs = row_differences(two_prompts, enc, rows)
    assert len(diffs) == 4 and max(diffs) < 1e-4, diffs
    assert two_prompts.active_adapter == "default"  # left as it was
    batch = soft_prompt_inputs(two_prompts, enc, rows)
    real = enc["attention_mask"].sum(-1)
    assert batch["attention_mask"].sum(-1).tolist() == (real + torch.tensor([3, 5, 0, 3])).tolist()
    logits = mixed_logits(two_prompts, enc, rows)
    other = mixed_logits(two_prompts, enc, ["b", "default", BASE, "b"])
    assert (logits[0] - other[0]).abs().max().item() > 1e-3  # the soft prompts differ, so do the rows


def test_mixed_soft_prompt_generation_equals_each_prompt_alone(two_prompts, tokenizer):
    rows = ["b", "default", BASE]
    mixed = mixed_generate(two_prompts, tokenizer, TEXTS[:3], rows, max_new_tokens=5)
    alone = []
    for text, name in zip(TEXTS[:3], rows):
        ids = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            if name == BASE:
                out = two_prompts.get_base_model().generate(**ids, max_new_tokens=5, do_sample=False,
                                                            pad_token_id=tokenizer.pad_token_id)
            else:
                two_prompts.set_adapter(name)
                out = two_prompts.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        alone.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert mixed == alone


def test_a_mixed_lora_batch_matches_each_row_alone(two_loras, tokenizer, enc):
    rows = ["b", "default", BASE, "b"]
    diffs = row_differences(two_loras, enc, rows)
    assert max(diffs) < 1e-4, diffs
    first = mixed_logits(two_loras, enc, rows)
    assert (first[0] - mixed_logits(two_loras, enc, ["default"] * 4)[0]).abs().max().item() > 1e-3
    assert len(mixed_generate(two_loras, tokenizer, TEXTS, rows, max_new_tokens=3)) == 4


def test_mixed_batches_refuse_bad_inputs(two_loras, two_prompts, tiny_model, tokenizer, enc):
    cases = [(lambda: mixed_logits(two_loras, enc, ["default"] * 3), "adapters"),
             (lambda: mixed_logits(two_loras, enc, ["default", "b", "nope", "b"]), "adapters"),
             (lambda: mixed_logits(two_loras, enc, "default"), "adapters"),
             (lambda: mixed_logits(tiny_model, enc, ["default"] * 4), "model"),
             (lambda: mixed_logits(two_loras, {"input_ids": enc["input_ids"]}, ["default"] * 4), "inputs"),
             (lambda: soft_prompt_inputs(two_loras, enc, ["default"] * 4), "model"),
             (lambda: mixed_generate(two_prompts, tokenizer, TEXTS[:2], ["b"], max_new_tokens=2), "adapters"),
             (lambda: mixed_generate(two_prompts, tokenizer, TEXTS[:1], ["b"], max_new_tokens=0), "max_new_tokens")]
    for call, field in cases:
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.field == field, (field, str(e.value))
    two_loras.merge_adapter()
    with pytest.raises(ConfigError, match="merged"):
        mixed_logits(two_loras, enc, ["default"] * 4)
    assert isinstance(two_prompts, PeftModel)
