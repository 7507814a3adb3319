"""ftlab.runs (one measured run, the Run button's train function) and ftlab.analysis' scoring and swap check, on
a real tokenizer and a tiny random Llama saved as a model folder (code paths, never quality)."""
import math
import os

import pytest
import torch

from ftlab.analysis import (EXACT_RESULT, ROUGE_L, adapter_swap_differences, answer_scores, logits_of, task_metric,
                            task_score)
from ftlab.config import TrainConfig
from ftlab.data import load_records, sft_data
from ftlab.errors import ConfigError, DataError
from ftlab.evaluation import generate, perplexity
from ftlab.methods import METHODS, apply_method
from ftlab.models import BaseModels, load_for
from ftlab.prompts import chat_prompts
from ftlab.report import ReportCallback
from ftlab.runs import _merges_for_generation, optimizer_state_bytes, panel_trainer, run_and_measure
from ftlab.trained import load_trained, save_trained


@pytest.fixture
def folder(tiny_folder):
    """The tiny model as a model folder (conftest's tiny_folder): what cfg.model names and load_for loads."""
    return tiny_folder


def small(folder, tmp_path, **kw):
    return TrainConfig(**{"model": folder, "dataset": "definitions", "max_steps": 2, "batch_size": 2, "seq_len": 128,
                          "lora_r": 2, "lora_alpha": 4.0, "bits": 32, "output_dir": str(tmp_path / "run"), **kw})


# --- run_and_measure ---------------------------------------------------------------------------------------------

def test_run_and_measure_reports_the_numbers_of_a_run(folder, tokenizer, tmp_path):
    cfg = small(folder, tmp_path)
    train, val = sft_data(cfg, tokenizer, n_validation=2)
    test = load_records("definitions", "test", n=2)
    events = []
    row = run_and_measure(cfg, train, val, test, listeners=[events.append], label="mine", max_new_tokens=4,
                          score_before=True, details=True)
    steps = [e for e in events if e["kind"] == "step"]
    assert len(steps) == 2 and all(e["method"] == "mine" for e in events)
    n_lora = 2 * sum(d + k for d, k in [(64, 64), (64, 32), (64, 32), (64, 64), (64, 128), (64, 128), (128, 64)]) * 2
    assert row["trainable"] == n_lora  # r·(in + out) on the 7 linear layers of 2 blocks
    assert row["trainable_pct"] == pytest.approx(100 * n_lora / row["total_parameters"])
    # AdamW keeps two fp32 moments a parameter (8 bytes) and a 4-byte step counter per tensor
    assert row["optimizer_bytes_per_param"] == pytest.approx(8 + 4 * 28 / n_lora)
    assert row["train_loss_first"] == row["train"]["losses"][0][1] and row["train"]["steps"] == 2
    assert not math.isnan(row["val_loss_before"]) and not math.isnan(row["val_loss_after"])
    assert 0 <= row["rougeL"] <= 1 and 0 <= row["rougeL_before"] <= 1
    assert len(row["predictions"]) == len(row["predictions_before"]) == 2 and row["example"] == row["predictions"][0]
    assert row["measured_gib"] > 0 and row["estimated_gib"] > 0 and row["memory"]["device"] in ("cpu", "cuda")
    assert "after_load" in row["memory"]["phases"] and row["model_info"]["bits"] == 32
    assert os.path.exists(os.path.join(row["saved_to"], "adapter_model.safetensors"))
    s = row["seconds"]
    assert s["total"] >= s["training"] + s["generate"] > 0 and s["load_evaluate_save"] > 0
    assert 0 < s["generate_before"] < s["generate"]


def test_run_and_measure_without_details_or_test_records_keeps_the_row_flat(folder, tokenizer, tmp_path):
    cfg = small(folder, tmp_path, method="ia3")
    train, val = sft_data(cfg, tokenizer, n_validation=2)
    row = run_and_measure(cfg, train, val, eval_before=False)
    assert math.isnan(row["val_loss_before"]) and not math.isnan(row["val_loss_after"])
    assert "rougeL" not in row and "train" not in row and "predictions" not in row
    assert all(not isinstance(v, (list, dict)) for k, v in row.items() if k != "seconds")


def test_answers_after_merging_are_those_of_the_unmerged_adapter(folder, tokenizer, tmp_path):
    """LoHa's update is folded into the weights before generating (as LoRA's and DoRA's): the answers must be
    the ones the saved adapter gives unmerged."""
    cfg = small(folder, tmp_path, method="loha", learning_rate=1e-2)
    train, val = sft_data(cfg, tokenizer, n_validation=2)
    test = load_records("definitions", "test", n=3)
    row = run_and_measure(cfg, train, val, test, max_new_tokens=6, details=True)
    unmerged = load_trained(load_for(cfg)[0], row["saved_to"])
    assert generate(unmerged, tokenizer, chat_prompts(tokenizer, test), max_new_tokens=6) == row["predictions"]


@pytest.mark.parametrize("kw, field", [
    (dict(c={"method": "lora"}), "c"),
    (dict(label=""), "label"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(generate_batch_size=0), "generate_batch_size"),
    (dict(score_before="yes"), "score_before"),
    (dict(details=1), "details"),
    (dict(listeners=print), "listeners"),
])
def test_run_and_measure_refuses_bad_arguments_before_loading(tmp_path, kw, field):
    sft = {"prompt": [{"role": "user", "content": "Define dog"}], "completion": [{"role": "assistant", "content": "a"}]}
    args = {"c": TrainConfig(model=str(tmp_path / "no model here"), output_dir=str(tmp_path)),
            "train_records": [sft], "val_records": [sft], **kw}
    with pytest.raises(ConfigError) as e:
        run_and_measure(**args)
    assert e.value.field == field


def test_optimizer_state_bytes_counts_every_state_tensor():
    layer = torch.nn.Linear(4, 3)  # 15 parameters in 2 tensors
    opt = torch.optim.AdamW(layer.parameters())
    assert optimizer_state_bytes(opt) == 0  # no step yet: no state
    layer(torch.ones(2, 4)).sum().backward()
    opt.step()
    assert optimizer_state_bytes(opt) == 15 * 2 * 4 + 2 * 4  # two fp32 moments, one fp32 step counter a tensor
    assert optimizer_state_bytes(None) == 0


def test_generation_merges_exactly_the_methods_peft_can_merge_into_a_16_bit_base(tmp_path):
    merged = {name for name, m in METHODS.items()
              if _merges_for_generation(TrainConfig(method=name, bits=m.needs_bits or 16, output_dir=str(tmp_path)))}
    assert merged == {"lora", "dora", "loha"}  # qlora's 4-bit base cannot take the update exactly
    assert not _merges_for_generation(TrainConfig(method="lora", bits=8, output_dir=str(tmp_path)))


# --- panel_trainer ---------------------------------------------------------------------------------------------

def test_panel_trainer_trains_the_held_base_first_then_loads_fresh(tiny_model, folder, tokenizer, tmp_path):
    cfg = small(folder, tmp_path)
    bases = BaseModels(tiny_model, tokenizer, folder, cfg.effective_bits)
    asked = []

    def data_for(c, tok):
        asked.append(c)
        return sft_data(c, tok, n_validation=2)

    train = panel_trainer(bases, data_for)
    result, model = train(cfg, ReportCallback())
    assert result.steps == 2 and asked == [cfg] and result.saved_to
    assert model.get_base_model() is tiny_model  # the model in memory served the first run
    result2, model2 = train(cfg, ReportCallback())
    assert result2.steps == 2 and model2.get_base_model() is not tiny_model  # a second run gets a fresh base


def test_panel_trainer_refuses_what_it_cannot_use(tiny_model, folder, tokenizer, tmp_path):
    with pytest.raises(ConfigError) as e:
        panel_trainer((tiny_model, tokenizer), sft_data)
    assert e.value.field == "bases" and "BaseModels" in str(e.value)
    bases = BaseModels(tiny_model, tokenizer, folder, 32)
    with pytest.raises(ConfigError) as e:
        panel_trainer(bases, "sft_data")
    assert e.value.field == "data_for"
    train = panel_trainer(bases, lambda c, tok: sft_data(c, tok)[0])  # the training records alone
    with pytest.raises(ConfigError) as e:
        train(small(folder, tmp_path), ReportCallback())
    assert e.value.field == "data_for" and "(train_records, val_records)" in str(e.value)


# --- scoring ---------------------------------------------------------------------------------------------------

def test_task_score_reads_the_result_of_a_sum_and_rouge_otherwise():
    sums, words = load_records("arithmetic", "test", n=4), load_records("definitions", "test", n=2)
    assert task_metric(sums) == EXACT_RESULT and task_metric(words) == ROUGE_L
    right = [r["target"] for r in sums]
    wrong = [t.rsplit("=", 1)[0] + f"= {r['result'] + 1}" for t, r in zip(right, sums)]
    assert task_score(right, sums) == 1.0 and task_score(wrong, sums) == 0.0
    assert task_score(right[:2] + wrong[2:], sums) == 0.5
    assert task_score([r["target"] for r in words], words) == pytest.approx(1.0)
    assert task_score(["", "zzz"], words) == 0.0
    with pytest.raises(DataError) as e:
        task_metric(sums[:1] + words[:1])
    assert e.value.field == "records" and "one task" in str(e.value)
    with pytest.raises(DataError) as e:
        task_score(right[:3], sums)
    assert e.value.field == "predictions"
    with pytest.raises(DataError) as e:
        task_score("870", sums[:1])
    assert e.value.field == "predictions"


def test_answer_scores_gives_the_four_metrics_of_the_models_answers(tiny_model, tokenizer):
    records = load_records("definitions", "test", n=3)
    scores, answers = answer_scores(tiny_model, tokenizer, records, max_new_tokens=4)
    assert set(scores) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match",
                           "perplexity of the references"}
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert all(0 <= scores[k] <= 1 for k in scores if k != "perplexity of the references")
    refs = [r["target"] for r in records]
    assert scores["perplexity of the references"] == pytest.approx(perplexity(tiny_model, tokenizer, refs), rel=1e-4)
    with pytest.raises(ConfigError) as e:
        answer_scores("smollm2-135m-instruct", tokenizer, records)
    assert e.value.field == "model"
    with pytest.raises(DataError) as e:
        answer_scores(tiny_model, tokenizer, [{"source": "dog"}])
    assert e.value.field == "records"


# --- logits and the swap check ------------------------------------------------------------------------------------

def test_logits_of_is_the_models_float_logits(tiny_model, tokenizer):
    enc = tokenizer(["a dog", "the cat sat"], return_tensors="pt", padding=True)
    out = logits_of(tiny_model, enc)
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, tiny_model(**enc).logits.detach().float())
    with pytest.raises(ConfigError) as e:
        logits_of(tiny_model, "a dog")
    assert e.value.field == "inputs" and "return_tensors" in str(e.value)


def _saved_lora(folder, tmp_path, name, seed):
    """A LoRA adapter with a non-zero update (B starts at 0: an untrained adapter would change nothing)."""
    cfg = small(folder, tmp_path, output_dir=str(tmp_path / name))
    torch.manual_seed(seed)
    model = apply_method(load_for(cfg)[0], cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return cfg, save_trained(model, tmp_path / name / "adapter", cfg)


def test_adapter_swap_differences_are_zero_for_the_right_folders(folder, tokenizer, tmp_path):
    from peft import PeftModel
    cfg, one = _saved_lora(folder, tmp_path, "one", 1)
    _, two = _saved_lora(folder, tmp_path, "two", 2)
    served = PeftModel.from_pretrained(load_for(cfg)[0], one, adapter_name="one")
    served.load_adapter(two, adapter_name="two")
    served.set_adapter("two")
    enc = tokenizer(["Define dog", "What is 2 + 3?"], return_tensors="pt", padding=True)
    diffs = adapter_swap_differences(served, {"one": one, "two": two}, cfg, enc)
    assert set(diffs) == {"one", "two"} and max(diffs.values()) <= 1e-5
    assert served.active_adapter == "two"  # left as it was
    crossed = adapter_swap_differences(served, {"one": two}, cfg, enc)  # the check sees a wrong adapter
    assert crossed["one"] > 1e-2
    for kw, field in [(dict(served=load_for(cfg)[0]), "served"), (dict(folders={}), "folders"),
                      (dict(folders={"three": one}), "folders"), (dict(cfg=None), "cfg")]:
        args = {"served": served, "folders": {"one": one}, "cfg": cfg, "inputs": enc, **kw}
        with pytest.raises(ConfigError) as e:
            adapter_swap_differences(**args)
        assert e.value.field == field
