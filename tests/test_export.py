"""ftlab.export on the tiny model: run artifacts are made by applying a method and perturbing what it trains (so a
merge matters), then saved as finetune saves them (output_dir/adapter)."""
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import ftlab.export as ex
from ftlab.config import TrainConfig
from ftlab.errors import CheckpointError, ConfigError
from ftlab.export import export_adapter, export_model, push_to_hub
from ftlab.methods import apply_method
from ftlab.models import load_model
from ftlab.results import write_results
from ftlab.trained import load_trained, save_trained

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "ftlab_method.json", "trained.safetensors"}


def _run(tiny_folder, tmp_path, method, *, saved_as=None, results=None, **kw):
    """A run's output_dir holding adapter/ (as finetune leaves it) and, if given, results.json."""
    out = tmp_path / f"run_{method}"
    cfg = TrainConfig(model=tiny_folder, method=method, output_dir=str(out), max_steps=7, dataset="email_subject",
                      **kw)
    torch.manual_seed(1)
    model = apply_method(load_model(tiny_folder, bits=32)[0], cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    save_trained(model, out / "adapter", saved_as or cfg)
    if results is not None:
        write_results(out, results)
    return out, model


def _logits(model, tok):
    ids = tok(ex._PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_a_low_rank_run_merges_into_a_plain_transformers_folder(tiny_folder, tmp_path, method):
    results = {"config": {"lr": 1.0}, "val_loss_before": 3.25, "val_loss_after": 2.5, "train": {"steps": 7},
               "runs": [{"val_loss_after": 9.0}], "seconds": 12.0}
    run, _ = _run(tiny_folder, tmp_path, method, lora_r=4, lora_targets="q,v", results=results)
    out = export_model(run, tmp_path / "merged")
    assert out["merged"] and out["plain_model"] and "why" not in out
    assert out["adapter_effect"] > 1e-2  # the perturbed adapter moves the logits: the check below means something
    assert out["max_logit_diff"] <= 1e-5
    files = set(os.listdir(out["folder"]))
    assert set(out["files"]) == files and "model.safetensors" in files and "README.md" in files
    assert not files & ADAPTER_FILES and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    plain = AutoModelForCausalLM.from_pretrained(out["folder"], dtype=torch.float32)
    assert not hasattr(plain, "peft_config") and not any("lora" in n for n, _ in plain.named_parameters())
    tok = AutoTokenizer.from_pretrained(out["folder"])
    assert tok.chat_template and tok.chat_template == AutoTokenizer.from_pretrained(tiny_folder).chat_template
    base, _ = load_model(tiny_folder, bits=32)
    unmerged = load_trained(base, str(run / "adapter"))
    torch.testing.assert_close(_logits(plain, tok), _logits(unmerged, tok), atol=1e-5, rtol=0)
    card = (tmp_path / "merged" / "README.md").read_text()
    for text in (tiny_folder, f"`{method}`", "lora_r = `4`", "max_steps = 7", "email_subject",
                 "| val_loss_before | 3.25 |", "| val_loss_after | 2.5 |", "| train.steps | 7 |",
                 str(run / "results.json")):
        assert text in card, text
    # per-row numbers and seconds are left out of the card ("12" alone would match a pytest-12 temporary path)
    table = card.split("## Results")[1].split("## Export")[0]
    assert "9.0" not in card and "| seconds |" not in table and "| 12.0 |" not in table


def test_a_qlora_run_merges_into_an_unquantised_base_and_says_so(tiny_folder, tmp_path):
    # the artifact of a QLoRA run (a LoRA adapter, its config saying qlora) made without a 4-bit load
    qlora = TrainConfig(model=tiny_folder, method="qlora", output_dir=str(tmp_path / "run_lora"), lora_r=4,
                        bits=4)
    run, _ = _run(tiny_folder, tmp_path, "lora", lora_r=4, saved_as=qlora)
    out = export_model(run / "adapter", tmp_path / "merged")
    assert out["merged"] and "4-bit" in out["note"] and "unquantised float32" in out["note"]
    assert out["max_logit_diff"] <= 1e-5
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "4-bit base" in card and "bits = `4`" in card  # the knobs of a quantised run are on the card
    assert "No measured numbers" in card and "| " not in card.split("## Results")[1].split("## Export")[0]


def test_a_soft_prompt_is_not_merged_says_why_and_exports_its_adapter(tiny_folder, tmp_path):
    run, _ = _run(tiny_folder, tmp_path, "prompt_tuning", num_virtual_tokens=4)
    out = export_model(run, tmp_path / "soft")
    assert not out["merged"] and not out["plain_model"] and "virtual tokens" in out["why"]
    assert out["max_logit_diff"] is None
    files = set(os.listdir(tmp_path / "soft"))
    assert {"adapter_config.json", "adapter_model.safetensors", "ftlab_method.json", "README.md"} <= files
    assert "config.json" not in files
    assert "Adapter only" in (tmp_path / "soft" / "README.md").read_text()
    back = load_trained(load_model(tiny_folder, bits=32)[0], str(tmp_path / "soft"))
    assert back.peft_config["default"].num_virtual_tokens == 4


def test_full_fine_tuning_exports_the_whole_model(tiny_folder, tmp_path):
    run, trained = _run(tiny_folder, tmp_path, "full")
    out = export_model(run, tmp_path / "whole")
    assert out["plain_model"] and not out["merged"] and "whole model" in out["why"]
    assert out["max_logit_diff"] == 0.0
    assert not set(out["files"]) & ADAPTER_FILES
    tok = AutoTokenizer.from_pretrained(tmp_path / "whole")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "whole", dtype=torch.float32)
    torch.testing.assert_close(_logits(plain, tok), _logits(trained.eval(), tok), atol=1e-6, rtol=0)


def test_export_adapter_copies_what_the_run_saved_with_a_card(tiny_folder, tmp_path):
    run, _ = _run(tiny_folder, tmp_path, "lora", lora_r=4)
    out = export_adapter(run, tmp_path / "ad")
    saved = set(os.listdir(run / "adapter"))
    assert set(out["files"]) == saved | {"README.md"} and not out["merged"]
    assert (tmp_path / "ad" / "adapter_model.safetensors").read_bytes() == \
        (run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert "`lora`" in (tmp_path / "ad" / "README.md").read_text()


def test_bad_inputs_are_refused_naming_the_field(tiny_folder, tmp_path, monkeypatch):
    run, _ = _run(tiny_folder, tmp_path, "lora", lora_r=4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    for bad in (tmp_path / "empty", tmp_path / "nowhere", tmp_path / "a_file"):
        with pytest.raises(CheckpointError) as e:
            export_model(bad, tmp_path / "x")
        assert e.value.field == "run" and str(bad) in str(e.value)
    with pytest.raises(ConfigError) as e:
        export_model(None, tmp_path / "x")
    assert e.value.field == "run"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    for target in (tmp_path / "taken", run / "adapter", run / "adapter" / "inside", tmp_path / "a_file"):
        with pytest.raises(ConfigError) as e:
            export_model(run, target)
        assert e.value.field == "folder" and str(target) in str(e.value)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert "overwrite=True" in str(pytest.raises(ConfigError, export_adapter, run, tmp_path / "taken").value)
    with pytest.raises(ConfigError) as e:
        export_model(run, tmp_path / "x", base=load_model(tiny_folder)[0])
    assert e.value.field == "base" and "(model, tokenizer)" in str(e.value)
    exported = export_adapter(run, tmp_path / "ok")["folder"]
    for repo in ("no-owner", "a/b/c", "", None, "own er/name", "owner/../x"):
        with pytest.raises(ConfigError) as e:
            push_to_hub(exported, repo)
        assert e.value.field == "repo_id" and "owner/name" in str(e.value)
    with pytest.raises(ConfigError) as e:
        push_to_hub(tmp_path / "empty", "me/model")
    assert e.value.field == "folder"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        push_to_hub(exported, "me/model")
    assert e.value.field == "HF_HUB_OFFLINE" and "offline" in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(ex, "hub_token", lambda: None)
    with pytest.raises(ConfigError) as e:
        push_to_hub(exported, "me/model")
    assert e.value.field == "HF_TOKEN" and "HF_TOKEN" in str(e.value)


def test_a_failure_half_way_leaves_no_folder(tiny_folder, tmp_path, monkeypatch):
    run, _ = _run(tiny_folder, tmp_path, "lora", lora_r=4)

    def broken(*a, **k):
        raise RuntimeError("killed while checking")
    monkeypatch.setattr(ex, "_check_reload", broken)
    with pytest.raises(RuntimeError):
        export_model(run, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("previous export")
    with pytest.raises(RuntimeError):
        export_model(run, tmp_path / "old", overwrite=True)
    assert os.listdir(tmp_path / "old") == ["keep.txt"]  # the previous export is untouched


def test_a_merge_that_changes_the_answers_is_caught(tiny_folder, tmp_path, monkeypatch):
    from peft.tuners.lora import LoraModel
    run, _ = _run(tiny_folder, tmp_path, "lora", lora_r=4)
    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, *a, **k: self.unload())  # the update lost
    with pytest.raises(CheckpointError) as e:
        export_model(run, tmp_path / "out")
    assert "differ" in str(e.value) and not (tmp_path / "out").exists()


def test_export_adapter_refuses_a_damaged_run_and_a_dotdot_target_is_resolved(tiny_folder, tmp_path):
    run, _ = _run(tiny_folder, tmp_path, "lora", lora_r=4)
    out = export_adapter(run, tmp_path / "x" / "sub" / "..", overwrite=True)
    assert out["folder"] == str((tmp_path / "x").resolve()) and (tmp_path / "x" / "README.md").exists()
    f = run / "adapter" / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError) as e:
        export_adapter(run, tmp_path / "broken")
    assert e.value.field == "run" and not (tmp_path / "broken").exists()
