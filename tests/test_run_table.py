"""Runs you can compare: the run.json every finetune run leaves (also after a Stop or a failure), TRL's tracking
by cfg.report_to, and runs_table / runs_figure over a folder of runs (real runs: the embedded SmolLM2 once,
the tiny random Llama for the code paths)."""
import glob
import json
import math
import os
import shutil
import threading
from datetime import datetime

import pandas as pd
import pytest

import ftlab.config
from ftlab.config import ConfigError, TrainConfig
from ftlab.data import load_records, to_prompt_completion
from ftlab.report import ReportCallback
from ftlab.results import RUN_RECORD, read_results
from ftlab.run_table import COLUMNS, runs_table
from ftlab.widgets import runs_figure
from ftlab.train import finetune, sft_config


def _data(n):
    return to_prompt_completion(load_records("definitions", "train", n=n))


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory):
    """One real run of the embedded SmolLM2-135M: LoRA r=2, 2 steps of 2 × 64 tokens, TensorBoard on."""
    out = tmp_path_factory.mktemp("smol") / "run"
    cfg = TrainConfig(model="smollm2-135m-instruct", method="lora", lora_r=2, lora_alpha=4.0, bits=32,
                      dataset="definitions", max_steps=2, batch_size=2, seq_len=64, learning_rate=1e-3,
                      output_dir=str(out), report_to="tensorboard")
    result, model = finetune(cfg, _data(4), _data(2))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return cfg, result, trainable, read_results(out, RUN_RECORD)


def _tiny_cfg(tmp_path, **kw):
    return TrainConfig(**{"method": "lora", "lora_r": 2, "max_steps": 2, "batch_size": 2, "seq_len": 64,
                          "dataset": "definitions", "output_dir": str(tmp_path / "tiny"), **kw})


# --- the run record --------------------------------------------------------------------------------------------

def test_a_real_run_leaves_run_json_with_what_it_did(smol_run):
    cfg, result, trainable, r = smol_run
    assert r["record"] == "ftlab run" and r["status"] == "finished" and r["error"] == ""
    assert (r["model"], r["method"], r["data"], r["report_to"]) == ("smollm2-135m-instruct", "lora", "definitions",
                                                                    "tensorboard")
    assert (r["train_examples"], r["eval_examples"], r["steps"], r["max_steps"]) == (4, 2, 2, 2)
    assert r["train_loss_first"] == result.first_loss and r["train_loss_last"] == result.last_loss
    assert r["eval_loss_before"] == result.eval_loss_before and r["eval_loss_after"] == result.eval_loss_after
    assert 0 < r["eval_loss_after"] < 20 and [s for s, _ in r["eval_losses"]] == [0, 2]
    assert [s for s, _ in r["losses"]] == [1, 2]
    assert r["seconds"] > 0 and r["tokens"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"])
    assert r["stopped"] is False and r["stop_reason"] == ""
    assert r["trainable_parameters"] == trainable and 0 < trainable < r["total_parameters"]
    assert r["memory_measured_kind"] == "CPU peak RSS" and r["memory_measured_gib"] > 0.2  # torch + the model
    assert r["memory_estimated_kind"] == "GPU peak allocated on T4 (estimate)" and r["memory_estimated_gib"] > 0
    assert r["config"] == json.loads(json.dumps(cfg.to_dict())) and r["saved_to"].endswith("adapter")
    assert abs((datetime.now().astimezone() - datetime.fromisoformat(r["date"])).total_seconds()) < 3600


def test_report_to_tensorboard_writes_trl_s_event_files_with_the_losses(smol_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg, result, _, _ = smol_run
    logs = glob.glob(os.path.join(cfg.output_dir, "runs", "*", "events.out.tfevents.*"))
    assert logs and len({os.path.dirname(f) for f in logs}) == 1, logs  # one folder: the run's, from step 0 on
    events = EventAccumulator(os.path.dirname(logs[0])).Reload()  # reads every event file of the folder
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in logged] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([loss for _, loss in result.losses], rel=1e-5)
    assert [e.step for e in events.Scalars("eval/loss")] == [0, 2]  # before and after training


def test_the_default_reports_to_no_tracker(tiny_model, tokenizer, tmp_path):
    cfg = _tiny_cfg(tmp_path)
    assert cfg.report_to == "none" and sft_config(cfg).report_to == []
    assert sft_config(_tiny_cfg(tmp_path, report_to="tensorboard")).report_to == ["tensorboard"]
    finetune(cfg, _data(4), model=tiny_model, tokenizer=tokenizer, eval_before=False, data_name="my words.jsonl")
    record = read_results(cfg.output_dir, RUN_RECORD)
    assert record["data"] == "my words.jsonl" and record["status"] == "finished" and record["report_to"] == "none"
    assert record["eval_loss_after"] is None  # no held-out data: null, not invented
    assert not glob.glob(os.path.join(cfg.output_dir, "**", "*tfevents*"), recursive=True)
    assert not os.path.exists(os.path.join(cfg.output_dir, "runs"))


def test_a_stopped_run_records_why(tiny_model, tokenizer, tmp_path):
    cfg = _tiny_cfg(tmp_path, max_steps=50)
    cb = ReportCallback()
    cb.listeners.append(lambda e: e["kind"] == "step" and e["step"] == 1 and
                        threading.Thread(target=cb.request_stop, args=("Stop pressed",)).start())
    result, _ = finetune(cfg, _data(8), model=tiny_model, tokenizer=tokenizer, callback=cb, eval_before=False)
    r = read_results(cfg.output_dir, RUN_RECORD)
    assert (r["status"], r["stopped"], r["stop_reason"]) == ("stopped", True, "Stop pressed")
    assert r["steps"] == result.steps and 1 <= r["steps"] <= 2 and r["checkpoint"] == result.checkpoint != ""


def test_a_run_that_fails_half_way_records_the_error_and_no_half_file(tiny_model, tokenizer, tmp_path):
    cfg = _tiny_cfg(tmp_path, max_steps=5)

    def breaks(event):
        if event["kind"] == "step" and event["step"] == 2:
            raise RuntimeError("the listener broke")
    with pytest.raises(RuntimeError, match="the listener broke"):
        finetune(cfg, _data(8), model=tiny_model, tokenizer=tokenizer, listeners=[breaks], eval_before=False)
    r = read_results(cfg.output_dir, RUN_RECORD)
    assert r["status"] == "failed" and r["error"] == "RuntimeError: the listener broke" and r["stopped"] is True
    assert r["steps"] == 2 and len(r["losses"]) == 2 and r["seconds"] > 0 and r["memory_measured_gib"] > 0
    assert not [f for f in os.listdir(cfg.output_dir) if f.startswith(".results-")]  # written whole or not at all


# --- report_to in the config -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["wandb", "trackio", "all", "", None, ["tensorboard"]])
def test_report_to_takes_only_the_offline_trackers(value):
    with pytest.raises(ConfigError, match=r"^report_to=.* is not allowed: one of \['none', 'tensorboard'\]") as e:
        TrainConfig(report_to=value)
    assert e.value.field == "report_to"


def test_an_allowed_tracker_that_is_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(ftlab.config.TRACKERS, "tensorboard", (("no_such_module_xyz",), "tensorboard==2.21.0"))
    with pytest.raises(ConfigError, match=r"report_to='tensorboard' .*pip install tensorboard==2\.21\.0") as e:
        TrainConfig(report_to="tensorboard")
    assert e.value.field == "report_to"


def test_report_to_comes_through_from_params():
    assert TrainConfig.from_params({"report_to": "tensorboard"}).report_to == "tensorboard"
    assert TrainConfig.from_params({"__name__": "__main__", "report_to": "none", "x": 1}).report_to == "none"


# --- the table and the figure ----------------------------------------------------------------------------------

QUICKSTART = {  # the shape labs/00_quickstart.ipynb writes (numbers made up, fields as the lab writes them)
    "config": TrainConfig(dataset="email_subject", max_steps=40).to_dict(), "trainable_parameters": 1_843_200,
    "train": {"steps": 40, "first_loss": 3.1, "last_loss": 1.9, "seconds": 210.0, "tokens_per_s": 120.0,
              "stopped": False, "eval_loss_before": 2.9, "eval_loss_after": 2.1, "losses": [[1, 3.1], [40, 1.9]]},
    "validation_loss": 2.1, "rouge_before": {"rougeL": 0.2}, "rouge_after": {"rougeL": 0.35},
    "memory_estimate": {"gpu": "T4", "total_gib": 1.9, "peak_allocated_gib": 1.25},
    "memory": {"device": "cpu", "peak_rss_gib": 2.5, "peak_rss_over_baseline_gib": 1.0, "phases": {}},
}


@pytest.fixture
def runs_root(smol_run, tmp_path):
    """A folder of runs: the real run's record beside a lab's results.json (ROUGE-L), a quickstart-shaped lab
    result alone, a damaged file and a lab of another shape (a sweep, no one method)."""
    root = tmp_path / "runs"
    (root / "smol").mkdir(parents=True)
    shutil.copy(os.path.join(smol_run[0].output_dir, RUN_RECORD), root / "smol" / RUN_RECORD)
    lab_beside = {"train": {"steps": 99, "first_loss": 9.0}, "rouge_before": {"rougeL": 0.1},
                  "rouge_after": {"rougeL": 0.3}}
    (root / "smol" / "results.json").write_text(json.dumps(lab_beside))
    (root / "old" / "quickstart").mkdir(parents=True)
    (root / "old" / "quickstart" / "results.json").write_text(json.dumps(QUICKSTART))
    os.utime(root / "old" / "quickstart" / "results.json", (1.6e9, 1.6e9))  # 2020: the oldest run
    (root / "broken").mkdir()
    (root / "broken" / "results.json").write_text('{"config": {"model": "x"')
    (root / "sweep").mkdir()
    (root / "sweep" / "results.json").write_text(json.dumps({"config": {"model": "smollm2-135m-instruct",
                                                                        "method": "lora", "dataset": "definitions"},
                                                             "rows": [{"method": "ia3"}]}))
    (root / "smol" / ".results-tmp.json").write_text("half")  # a temporary of write_results: never a run
    return root


def test_runs_table_lists_every_run_with_what_its_files_hold(runs_root, smol_run):
    record = smol_run[3]
    t = runs_table(runs_root)
    assert list(t.columns) == list(COLUMNS) and len(t) == 4
    assert t["folder"].iloc[0] == os.path.join("old", "quickstart")  # oldest first
    rows = t.set_index("folder").to_dict("index")
    smol = rows["smol"]
    assert smol["files"] == "run.json + results.json" and smol["status"] == "finished"
    assert (smol["model"], smol["method"], smol["data"]) == ("smollm2-135m-instruct", "lora", "definitions")
    assert smol["steps"] == 2 and smol["train_loss_first"] == record["train_loss_first"]  # the record wins
    assert smol["val_loss_after"] == record["eval_loss_after"] and smol["seconds"] == record["seconds"]
    assert (smol["metric"], smol["metric_before"], smol["metric_after"]) == ("ROUGE-L", 0.1, 0.3)  # the lab fills
    assert smol["memory_measured_kind"] == "CPU peak RSS" and smol["memory_measured_gib"] > 0.2
    assert pd.isna(smol["note"])
    q = rows[os.path.join("old", "quickstart")]
    assert (q["model"], q["method"], q["data"], q["status"]) == ("smollm2-135m-instruct", "lora", "email_subject",
                                                                 "finished")
    assert (q["steps"], q["train_loss_first"], q["train_loss_last"]) == (40, 3.1, 1.9)
    assert (q["val_loss_before"], q["val_loss_after"], q["metric_before"], q["metric_after"]) == (2.9, 2.1, 0.2, 0.35)
    assert (q["memory_estimated_gib"], q["memory_estimated_kind"]) == (1.25, "GPU peak allocated on T4 (estimate)")
    assert (q["memory_measured_gib"], q["memory_measured_kind"]) == (2.5, "CPU peak RSS")
    assert (q["seconds"], q["tokens_per_s"], q["trainable_parameters"]) == (210.0, 120.0, 1_843_200)
    assert q["when"] == pd.Timestamp(datetime.fromtimestamp(1.6e9))
    broken = rows["broken"]
    assert "results.json not read" in broken["note"] and "not valid JSON" in broken["note"]
    assert pd.isna(broken["model"]) and math.isnan(broken["steps"]) and pd.notna(broken["when"])
    sweep = rows["sweep"]  # no train summary: the config's model and data hold, its method does not
    assert (sweep["model"], sweep["data"]) == ("smollm2-135m-instruct", "definitions")
    assert pd.isna(sweep["method"]) and math.isnan(sweep["steps"]) and math.isnan(sweep["val_loss_after"])


def test_runs_figure_draws_the_losses_and_the_memory(runs_root):
    import plotly.graph_objects as go
    t = runs_table(runs_root)
    fig = runs_figure(t)
    assert isinstance(fig, go.Figure)
    lines = {tr.name: list(tr.y) for tr in fig.data if tr.type == "scatter"}
    assert lines[f"{os.path.join('old', 'quickstart')} (validation)"] == [2.9, 2.1]
    assert set(lines) == {"smol (validation)", f"{os.path.join('old', 'quickstart')} (validation)"}
    bars = {tr.name: tr for tr in fig.data if tr.type == "bar"}
    assert list(bars["memory estimated"].y)[0] == 1.25 and list(bars["memory measured"].y)[0] == 2.5
    assert "CPU peak RSS" in bars["memory measured"].hovertext
    assert fig.to_html(include_plotlyjs=False)  # static: exports to HTML


def test_an_empty_or_unreadable_folder_gives_a_table_and_a_figure_that_say_so(tmp_path):
    empty = runs_table(tmp_path)
    assert empty.empty and list(empty.columns) == list(COLUMNS)
    assert "No runs to compare" in runs_figure(empty).layout.annotations[0].text
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text("[1, 2]")
    t = runs_table(tmp_path)
    assert len(t) == 1 and "holds a JSON list" in t["note"][0]
    assert any("no loss and no memory" in a.text for a in runs_figure(t).layout.annotations)


@pytest.mark.parametrize("root,why", [("missing", "does not exist"), ("file", "is a file"), ("", "non-empty"),
                                      (None, "non-empty"), (3, "non-empty")])
def test_a_bad_root_is_a_config_error_naming_root(tmp_path, root, why):
    (tmp_path / "file").write_text("x")
    root = str(tmp_path / root) if root in ("missing", "file") else root
    with pytest.raises(ConfigError, match=why) as e:
        runs_table(root)
    assert e.value.field == "root" and str(e.value).startswith("root=")


def test_root_expands_the_home_folder_and_the_figure_refuses_what_is_not_a_table(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "results.json").write_text(json.dumps(QUICKSTART))
    assert runs_table("~/runs")["steps"].tolist() == [40.0]
    with pytest.raises(ConfigError, match="runs_table") as e:
        runs_figure([{"folder": "r"}])
    assert e.value.field == "table"
