"""The labs, run headlessly under papermill as CI runs them, checked through their results.json."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.results import read_results

ROOT = Path(__file__).resolve().parent.parent


FAKE_TOKEN = "hf_ftlabFakeToken0123456789abcdefXYZ"  # must never appear in anything a lab writes


def run_lab(name: str, out: Path, *params: str) -> dict:
    """papermill with labs/params/ci.yaml and a fake Hugging Face token in the environment; returns the lab's
    results.json after checking that the token appears in no file the run wrote, nor in its output."""
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "labs" / name), str(out / name), "-k", "ftlab",
           "--cwd", str(ROOT / "labs"), "-f", str(ROOT / "labs" / "params" / "ci.yaml"),
           "-p", "output_dir", str(out / "run"), *params]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": FAKE_TOKEN})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert FAKE_TOKEN not in proc.stdout + proc.stderr
    leaked = [str(p) for p in out.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaked, f"the HF token was written into {leaked}"
    assert not widget_only_charts(out / name), "a chart shows only as a widget view: blank in the HTML export"
    return read_results(out / "run")


def widget_only_charts(executed: Path) -> list[int]:
    """Cells whose plotly chart was output as a FigureWidget view alone (no static figure): an HTML export (and
    GitHub) shows nothing there. A lab run with interactive=False must show charts as static figures."""
    cells = json.loads(executed.read_text())["cells"]
    bad = []
    for i, cell in enumerate(cells):
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            plain = "".join(data.get("text/plain", ""))
            if "application/vnd.jupyter.widget-view+json" in data and plain.startswith("FigureWidget(") \
                    and "application/vnd.plotly.v1+json" not in data and "text/html" not in data:
                bad.append(i)
    return bad


@pytest.mark.slow
def test_quickstart_with_ci_parameters(tmp_path):
    r = run_lab("00_quickstart.ipynb", tmp_path)
    t = r["train"]
    assert r["config"]["method"] == "lora" and r["config"]["max_steps"] == 20 and r["device"] in ("cpu", "cuda")
    assert r["model_source"].endswith("smollm2-135m-instruct") or "SmolLM2" in r["model_source"]
    assert t["steps"] == 20 and not t["stopped"]
    assert t["eval_loss_after"] < t["eval_loss_before"]            # held-out loss fell
    assert 0 < r["trainable_parameters"] < 0.05 * r["total_parameters"]
    assert 0 <= r["rouge_before"]["rougeL"] <= 1 and 0 <= r["rouge_after"]["rougeL"] <= 1
    assert len(r["examples"]) == 16
    assert (r["memory"]["peak_rss_gib"] if r["memory"]["device"] == "cpu" else r["memory"]["peak_allocated_gib"]) > 0.3
    assert Path(r["adapter_dir"], "adapter_model.safetensors").exists()
    est = r["memory_estimate"]
    assert est["gpu"] == "T4" and est["total_gib"] == pytest.approx(sum(est["components"].values()))
    assert est["device"] == r["memory"]["device"] and abs(est["error"]) <= 0.15  # the calculator, checked on this run
    executed = (tmp_path / "00_quickstart.ipynb").read_text()
    assert "injected-parameters" in executed and "Traceback" not in executed


@pytest.mark.slow
def test_quickstart_trains_on_a_users_file_given_as_data_path(tmp_path):
    """A user's 200 prompt/completion pairs (real WordNet glosses, in a JSONL file of their own) in place of the
    embedded e-mails: trained on, validated and scored on the file's held-out part, nothing else written."""
    from ftlab.data import load_records
    rows = load_records("definitions", "train", n=200, seed=3)
    mine = tmp_path / "my pairs.jsonl"
    mine.write_text("".join(json.dumps({"prompt": r["source"], "completion": r["target"]}) + "\n" for r in rows))
    # fewer steps and scored answers than the quickstart's own CI run: this run checks the data path, not training
    r = run_lab("00_quickstart.ipynb", tmp_path, "-p", "data_path", str(mine), "-p", "max_steps", "8",
                "-p", "eval_examples", "8")
    assert r["data"] == {"dataset": str(mine), "own_file": True, "train": 180, "validation": 20, "scored": 8}
    assert r["config"]["dataset"] == str(mine) and r["train"]["examples"] == 180
    assert r["train"]["eval_loss_after"] < r["train"]["eval_loss_before"]
    assert {e["reference"] for e in r["examples"]} <= {row["target"] for row in rows}


@pytest.mark.slow
def test_memory_calculator_lab(tmp_path):
    r = run_lab("01_memory_calculator.ipynb", tmp_path)
    assert r["serving_formula_gb"] == pytest.approx(168.0)
    assert r["lecture_table_gap"] <= 0.011  # BITS Pilani's Llama-3-8B table, reproduced by the rule it implies
    assert r["trl_over_loop"] < 0.8 and r["qlora_minus_lora_gib"]["smollm2-135m-instruct"] > 0  # what the lab shows
    assert r["calibration"]["shared"]["rows"] == 26 and r["calibration"]["shared"]["within ±10 %"] == 26
    assert 1000 <= sum(r["full_65b_parts_gb"].values()) <= 1400
    q65 = r["qlora_65b_48gb"]  # QLoRA's 65B on one 48 GB GPU: in the calculator, with its paged optimizer only
    assert q65["paged_adamw_8bit"]["fits"] and not q65["adamw"]["fits"]
    assert r["your_setup"]["total_gib"] == pytest.approx(sum(r["your_setup"]["components_gib"].values()))
    assert "✓" in r["fit_grid"]["llama-3.1-8b/qlora"]["T4"] and "✗" in r["fit_grid"]["llama-2-70b/full"]["H100-80GB"]


@pytest.mark.slow
def test_peft_methods_lab(tmp_path):
    r = run_lab("07_peft_methods.ipynb", tmp_path)
    rows = {row["method"]: row for row in r["rows"]}
    assert set(rows) == set(r["methods"]) and len(rows) == 14
    assert "no bias terms" in rows["bitfit"]["skipped"]  # SmolLM2 has none: the row says so instead of numbers
    ran = {m: row for m, row in rows.items() if "skipped" not in row}
    assert len(ran) == 13
    for m, row in ran.items():
        assert row["val_loss_after"] < row["val_loss_before"], m
        assert row["seconds_per_step"] > 0 and row["measured_gib"] > 0 and row["estimated_gib"] > 0, m
        assert 0 <= row["rougeL"] <= 1 and 0 <= row["val_accuracy_before"] < 1 and 0 < row["val_accuracy_after"] < 1, m
    assert ran["full"]["trainable_pct"] == pytest.approx(100.0)
    # methods that start as the 16/32-bit base share full fine-tuning's validation pass before training
    shared = {m for m, row in ran.items() if row.get("val_before_from") == "full"}
    assert shared == {"lora", "dora", "loha", "ia3", "ln_tuning", "top_k"}
    assert all(ran[m]["val_loss_before"] == ran["full"]["val_loss_before"] for m in shared)
    assert ran["qlora"]["bits"] == 4 and ran["lora_8bit"]["bits"] == 8
    # the families' sizes: soft prompts and IA3 train far less than LoRA, which trains far less than full
    assert ran["prompt_tuning"]["trainable"] < ran["ia3"]["trainable"] < ran["lora"]["trainable"] < ran["full"]["trainable"] / 20
    assert ran["lora"]["estimated_gib"] < ran["full"]["estimated_gib"]
    # a 135M model is mostly embeddings, which a 4-bit base keeps (in fp32, once prepared for training):
    # QLoRA saves nothing here (the calculator says 1.55 vs 1.51 GiB at 4×128); top-k saves most, since no
    # gradient flows below the blocks it trains
    assert ran["top_k"]["estimated_gib"] < ran["lora"]["estimated_gib"]


@pytest.mark.slow
def test_classification_lab(tmp_path):
    r = run_lab("11_classification.ipynb", tmp_path)
    assert r["labels"] == ["noun", "verb", "adjective", "adverb"] and r["train_examples"] == 192
    ways = {m["way"]: m for m in r["methods"]}
    full, zero = ways["fine-tuning: full"], ways["decoder, label word, zero-shot"]
    assert full["accuracy"] > r["majority"]["accuracy"] and full["accuracy"] > zero["accuracy"]
    assert ways["fine-tuning: bitfit"]["trainable"] < ways["fine-tuning: lora"]["trainable"] < full["trainable"]
    assert ways["feature extraction + logistic regression"]["trainable"] == 4 * 384 + 4  # the probe's weights
    assert all(0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 for m in r["methods"])
    word = ways["decoder, label word, LoRA (10 steps)"]  # the decoder taught to answer with the label word
    assert 0 < word["trainable"] < ways["fine-tuning: lora"]["trainable"] * 100 and word["seconds"] > 0
    for name in ("full", "lora", "bitfit"):  # the calculator's estimate beside the measured memory of each run
        row = ways[f"fine-tuning: {name}"]
        assert row["memory estimate (GiB)"] > 0 and row["memory measured (GiB)"] > 0
    curve = {(c["start"], c["examples"]): c["accuracy"] for c in r["curve"]}
    smallest = min(n for _, n in curve)
    assert curve[("pretrained", smallest)] > curve[("random", smallest)]
    masks = r["masks"]
    causal = masks["causal (decoder)"]
    assert all(causal[i][j] == (j <= i) for i in range(len(causal)) for j in range(len(causal)))


@pytest.mark.slow
def test_qlora_lab(tmp_path):
    r = run_lab("05_qlora.ipynb", tmp_path)
    assert len(r["nf4_levels"]) == 16 and r["nf4_levels"][0] == -1.0 and 0.0 in r["nf4_levels"]
    normal = r["errors"]["normal N(0, 0.02²)"]
    assert normal["nf4 (bitsandbytes, per 64)"]["mse"] < normal["int4 (absmax per 64)"]["mse"]
    spiked, plain = r["outlier"]["one outlier"], r["outlier"]["no outlier"]  # absmax int8's weakness, on a tensor
    assert spiked["mean |error| of the others"] > 10 * plain["mean |error| of the others"]
    assert spiked["levels used"] < plain["levels used"] and "MiniLM layer 0 query" in r["errors"]
    s = r["sizes_mib"]
    assert s["4-bit NF4 + double quant"] < s["4-bit NF4"] < s["8-bit"] < s["16-bit"]
    lora, qlora = r["runs"]
    assert lora["val loss after"] < lora["val loss before"] and qlora["val loss after"] < qlora["val loss before"]
    # the 4-bit base must not slow learning much (it did on CPU when bitsandbytes' inference kernel dropped the backward)
    assert qlora["val loss before"] - qlora["val loss after"] >= 0.5 * (lora["val loss before"] - lora["val loss after"])
    assert qlora["optimizer state (bytes a parameter)"] < lora["optimizer state (bytes a parameter)"] / 3


@pytest.mark.slow
def test_lora_lab(tmp_path):
    r = run_lab("04_lora.ipynb", tmp_path)
    fewer = {row["weight"]: row["fewer"] for row in r["arithmetic"]}
    assert fewer["512×64, r=8"] == "85.9 %" and fewer["100×100, r=2"] == "96.0 %"
    sweep = r["rank_sweep"]
    assert [row["r"] for row in sweep] == [1, 16, 64]  # the CI parameters' ranks
    assert len({row["trainable"] // row["r"] for row in sweep}) == 1  # linear in r
    assert all(row["val_loss_after"] < row["val_loss_before"] for row in sweep + r["targets"])
    est = [row["estimated_gib"] for row in sweep]
    assert est == sorted(est)  # more rank, never less memory
    assert {t["targets"] for t in r["targets"]} == {"q", "q,v", "q,k,v,o", "all-linear"}
    for a in r["task_adapters"].values():
        assert a["val_loss_after"] < a["val_loss_before"]
    assert max(r["swap_max_abs_diff"].values()) <= 1e-4 < r["adapters_differ"]
    m = r["merge"]
    assert m["lora_params_left"] == 0 and m["same_argmax"] and m["relative"] < 1e-5


@pytest.mark.slow
def test_full_finetuning_lab(tmp_path):
    r = run_lab("02_full_finetuning.ipynb", tmp_path)
    assert len(r["loop_losses"]) == 3 and len(r["trainer_losses"]) == 3
    full, lora = r["forgetting"]
    assert full["run"] == "full fine-tuning" and lora["run"].startswith("LoRA")
    assert full["task val loss after"] < full["task val loss before"]
    assert lora["task val loss after"] < lora["task val loss before"]
    assert full["prose perplexity after"] > r["perplexity_base"]  # it forgot
    assert full["prose perplexity after"] > lora["prose perplexity after"]  # LoRA forgot less
    mem = r["memory_gib"]
    assert mem["full fine-tuning"] > max(v for k, v in mem.items() if k != "full fine-tuning")


@pytest.mark.slow
def test_evaluation_lab(tmp_path):
    r = run_lab("10_evaluation.ipynb", tmp_path)
    same, reordered, short, sentences = r["toy"]
    assert same["rouge1"] == same["rougeLsum"] == same["exact match"] == 1.0
    assert reordered["rouge1"] == 1.0 > reordered["rouge2"] and reordered["exact match"] == 0.0
    assert sentences["rougeLsum"] == 1.0 > sentences["rougeL"]
    b, a = r["before"], r["after"]
    assert set(b) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "exact_match", "perplexity of the references"}
    assert a["perplexity of the references"] < b["perplexity of the references"]
    assert a["rougeL"] > b["rougeL"]
    assert len(r["examples"]) == 16 and r["train"]["steps"] == 20
    rp = r["rouge_precision_recall"]
    short, chatty = rp["toy"][2], rp["toy"][4]
    assert short["rouge1 precision"] == 0.5 and chatty["rouge1 recall"] == 1.0 > chatty["rouge1 precision"]
    assert rp["before"]["rougeL fmeasure"] == pytest.approx(b["rougeL"])
    mc = r["multiple_choice"]
    assert set(mc) == {"same part of speech", "sibling"}
    for kind, k in (("same part of speech", 4), ("sibling", 2)):
        for when in ("before", "after"):
            s = mc[kind][when]
            assert s["questions"] == 12 and s["choices"] == k and s["chance"] == pytest.approx(1 / k)
            assert all(0 <= s[f"accuracy ({x})"] <= 1 for x in ("sum", "mean", "per character"))
    # a summed log-likelihood favours short answers more than the per-token mean does
    assert mc["same part of speech"]["before"]["picked the shortest (sum)"] > \
        mc["same part of speech"]["before"]["picked the shortest (mean)"]
    assert set(r["multiple_choice_change"]) == {f"{k}, {x}" for k in mc for x in ("sum", "mean")}


@pytest.mark.slow
def test_soft_prompts_lab(tmp_path):
    r = run_lab("06_soft_prompts.ipynb", tmp_path)
    rows = {row["run"]: row for row in r["compared"]}
    assert set(rows) == {"prompt tuning (random init)", "prompt tuning (text init)", "prefix tuning", "p-tuning"}
    assert all(row["val_loss_after"] < row["val_loss_before"] for row in rows.values())
    assert rows["prompt tuning (text init)"]["trainable"] == 16 * 576  # N × hidden
    assert [s["virtual tokens"] for s in r["virtual_token_sweep"]] == [4, 16]
    assert [s["trainable"] for s in r["virtual_token_sweep"]] == [4 * 576, 16 * 576]
    cos = {k: sum(x["cosine"] for x in v) / len(v) for k, v in r["nearest"].items()}
    assert cos["prompt tuning (text init)"] > cos["prompt tuning (random init)"]
    assert all(p["val_loss_after"] < p["val_loss_before"] for p in r["task_prompts"].values())
    assert max(r["swap_max_abs_diff"].values()) <= 1e-4


@pytest.mark.slow
def test_instruction_tuning_lab(tmp_path):
    r = run_lab("03_instruction_tuning.ipynb", tmp_path)
    assert r["tasks"] == ["email_subject", "definitions", "arithmetic"]
    assert r["pii"]["phones"] > 0  # the embedded e-mails still hold phone numbers: the lab finds them
    assert {a["augmentation"] for a in r["augmented"]} == {"(original)", "synonym replacement", "word deletion",
                                                          "word swap", "typo noise"}
    only, everything = r["loss_on"]["answer only"], r["loss_on"]["everything"]
    assert only["held_out_answer_loss"] < everything["held_out_answer_loss"] < r["base_held_out_answer_loss"]
    assert only["steps"] == everything["steps"] == 12
    rows = {b["task"]: b for b in r["baselines"]}
    assert set(rows) == set(r["tasks"]) and rows["arithmetic"]["metric"] == "exact result"
    assert all(set(b) == {"task", "metric", "zero-shot", "2-shot", "fine-tuned (answer only)"} for b in rows.values())
    p = r["prompting"]
    assert p["questions"] == 12 and p["max_new_tokens"] == 48 and p["shots"] == 4
    s = {row["setting"]: row for row in p["settings"]}
    assert list(s) == ["direct", "zero-shot CoT", "few-shot CoT", "few-shot answers", "fine-tuned"]
    assert all(0 <= row["accuracy"] <= 1 and len(row["correct"]) == 12 for row in s.values())
    assert s["few-shot CoT"]["prompt tokens"] > s["few-shot answers"]["prompt tokens"] > s["direct"]["prompt tokens"]
    assert len(p["findings"]) == 6 and p["seconds"] > 0


@pytest.mark.slow
def test_preference_alignment_lab(tmp_path):
    r = run_lab("08_preference_alignment.ipynb", tmp_path)
    rm = r["reward_model"]
    assert rm["after"]["accuracy"] > 0.5 and rm["held_out_pairs"] == 16
    assert 0 <= rm["hard_pairs_accuracy"] <= 1
    assert r["dpo"]["held_out_after"]["margin"] > 0 and len(r["dpo"]["margins"]) == 4
    g = r["grpo"]
    assert len(g["reward"]) == 6 and g["reward_last"] > g["reward_first"]
    assert 0 <= g["greedy_accuracy_before"] <= 1 and 0 <= g["greedy_accuracy_after"] <= 1
    sweep = r["dpo_beta_sweep"]["rows"]
    assert [row["beta"] for row in sweep] == [0.1, 0.5]
    assert all(row["kl"] > 0 and 0 <= row["accuracy"] <= 1 for row in sweep)
    assert all(row["log_ratio_margin"] == pytest.approx(row["margin"] / row["beta"]) for row in sweep)
    gr = r["gamed_reward"]
    assert gr["before"]["kl"] == 0 and gr["no_kl"]["kl"] > 0 and gr["with_kl"]["kl"] > 0
    assert gr["no_kl"]["reward"] > gr["before"]["reward"]           # the gamed reward is learned at β = 0
    assert gr["with_kl"]["kl"] < gr["no_kl"]["kl"]                  # the KL penalty keeps the policy closer
    assert len(gr["with_kl"]["train_kl"]) == 4 and gr["no_kl"]["train_kl"] == []   # TRL logs kl only when β > 0


@pytest.mark.slow
def test_distillation_lab(tmp_path):
    r = run_lab("09_distillation.ipynb", tmp_path)
    h = r["held_out"]
    assert r["sizes"]["student"]["layers"] < r["sizes"]["teacher"]["layers"]
    assert r["sizes"]["student"]["parameters"] < r["sizes"]["teacher"]["parameters"]
    assert h["teacher"]["kl_to_teacher"] == pytest.approx(0, abs=1e-4) and h["teacher"]["top1_agreement"] == 1.0
    students = ("plain fine-tuning", "token-level distillation", "sequence-level distillation")
    for s in students:
        assert h[s]["kl_to_teacher"] < h["student, untrained"]["kl_to_teacher"], s
        assert r["train"][s]["steps"] == r["config"]["student_steps"], s
    assert h["token-level distillation"]["kl_to_teacher"] < h["plain fine-tuning"]["kl_to_teacher"]


@pytest.mark.slow
def test_scaling_out_lab(tmp_path):
    r = run_lab("12_scaling_out.ipynb", tmp_path)
    assert 1000 <= sum(r["parts_65b_gb"].values()) <= 1400                 # CS11-711's 65B range
    need = {row["strategy"]: row for row in r["gpus_for_65b"]}
    assert 16 <= need["ZeRO-3"]["A100-80GBs needed"] <= 32 and need["DDP"]["A100-80GBs needed"] == "> 512"
    assert need["ZeRO-3 with the optimizer on the CPU"]["A100-80GBs needed"] < need["ZeRO-3"]["A100-80GBs needed"]
    assert need["ZeRO-3 with the optimizer on the CPU"]["CPU GiB a machine"] > 900
    plan = r["plans"]["llama-3.1-70b/full/8xA100-80GB"]
    assert (plan["strategy"], plan["offload_optimizer"], plan["offload_params"]) == ("zero3", True, False)
    paper = {row["GPUs"]: row for row in r["paper_gb_a_gpu"]}
    assert paper[8]["ZeRO-3"] * 8 == pytest.approx(paper[1]["ZeRO-3"])
    run = r["run"]
    assert run["world_size"] == run["processes"] == 2 and run["steps"] == 6   # the two processes met
    assert Path(run["saved_to"], "adapter_model.safetensors").exists()
    assert {"train.py", "accelerate_config.yaml", "README.md", "launch.slurm"} <= set(r["launch_files"])


@pytest.mark.slow
def test_data_lab(tmp_path):
    r = run_lab("13_data.ipynb", tmp_path)
    tasks = r["train_tasks"] + [r["heldout_task"]]
    assert r["heldout_task"] not in r["train_tasks"] and r["single_task"] in r["train_tasks"]
    loss = r["generalisation"]["answer_loss"]
    assert set(loss) == {"base", "multi-task", "single-task"} and all(set(v) == set(tasks) for v in loss.values())
    # each run learned the task it trained on most
    assert loss["single-task"][r["single_task"]] < loss["base"][r["single_task"]]
    assert all(0 <= v <= 1 for v in r["generalisation"]["unseen_rougeL"].values())
    runs = r["data_runs"]
    sizes = [16, 64]  # labs/params/ci.yaml, one epoch at 4 a step
    assert [(x["examples"], x["steps"]) for x in runs[:2]] == [(16, 4), (64, 16)]
    assert runs[-1]["held-out loss"] < r["base_loss"]  # 16 examples, repeated: the task is learned
    assert r["noisy_changed"] == 32 and runs[2]["examples"] == 64 and runs[2]["wrong answers"] == 32
    aug, rep = runs[3], runs[4]
    assert aug["examples"] == 3 * sizes[0] and aug["steps"] == rep["steps"] == 12 and rep["examples"] == sizes[0]
    si = r["self_instruct"]
    assert len(si["rows"]) == 2 * 6 and si["pool"] == si["seeds"] + sum(row["kept"] for row in si["rows"])
    assert all(row["kept"] == (row["why dropped"] == "") for row in si["rows"])
    assert all(row["ROUGE-L"] < 0.7 for row in si["rows"] if row["kept"])


@pytest.mark.slow
def test_deployment_lab(tmp_path):
    r = run_lab("14_deployment.ipynb", tmp_path)
    sizes = {s["method"]: s for s in r["sizes"]}
    full = sizes.pop("full fine-tuning")
    assert full["file_bytes"] > 10 * max(s["file_bytes"] for s in sizes.values())
    # a saved file is its trainable weights plus a header of a few hundred bytes a tensor
    assert all(0 <= s["file_bytes"] - s["trainable_bytes"] <= 300 * s["tensors"] + 64 for s in [full, *sizes.values()])
    assert sizes["prompt tuning, 20 tokens"]["trainable"] == 20 * 576  # N × hidden
    assert sizes["prefix tuning, 20 tokens"]["trainable"] == 20 * 30 * 2 * 192  # N × layers × 2 × kv width
    assert r["merge"]["lora_effect"] > 1e-3 and r["merge"]["max_abs_diff"] < 1e-3 * r["merge"]["lora_effect"]
    assert len(r["latency"]["forward"]) == 7 and r["latency"]["forward"]["base"]["ratio"] == 1.0
    assert all(len(v["times_s"]) == 4 and v["median_s"] > 0 for t in ("forward", "generation")
               for v in r["latency"][t].values())
    assert [t["method"] for t in r["trained"]] == ["prompt_tuning", "prompt_tuning"]
    assert all(t["val_loss_after"] < t["val_loss_before"] for t in r["trained"])
    assert r["mixed"]["prompt_tuning"]["rows"] == ["email", "define", "email", "define", "__base__"]
    assert all(max(m["max_abs_logit_diff"]) <= 1e-3 for m in r["mixed"].values())
