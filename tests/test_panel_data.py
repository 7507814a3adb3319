"""The set-up panel's groups, its capacity bar, its dataset field, a DataPanel joined to it (a user's file trains
from the panel with no code), and the playground refusing to generate while a run changes the weights."""
import json
from datetime import datetime, timezone

import pytest

from ftlab.config import TrainConfig
from ftlab.data import load_records
from ftlab.errors import ConfigError
from ftlab.memory import GPUS, estimate_memory
from ftlab.widgets import ConfigPanel, DataPanel
from ftlab.widgets.panel import GROUPS


def write_pairs(path, n=200):
    """n real prompt/completion pairs (WordNet glosses) as a user's JSONL file."""
    rows = load_records("definitions", "train", n=n, seed=1)
    path.write_text("".join(json.dumps({"prompt": r["source"], "completion": r["target"]}) + "\n" for r in rows))
    return str(path)


def test_fields_are_grouped_in_tabs_and_a_field_in_error_brings_its_tab_forward():
    panel = ConfigPanel(TrainConfig())
    assert list(panel.tabs.titles) == list(GROUPS) == ["model", "method", "data", "training", "hardware"]
    in_tabs = [w for box in panel.tabs.children for w in box.children]
    assert all(w in in_tabs for w in [*panel.fields.values(), *panel.hardware.values()])
    assert len(in_tabs) == len(panel.fields) + len(panel.hardware)  # each field once
    panel.tabs.selected_index = 0
    panel.fields["batch_size"].value = 0
    assert panel.error.field == "batch_size" and panel.tabs.selected_index == 3
    panel.fields["batch_size"].value = 2
    panel.hardware["num_gpus"].value = 0
    assert panel.error.field == "num_gpus" and panel.tabs.selected_index == 4


def test_the_capacity_bar_is_the_estimate_by_part_against_the_gpu_and_follows_every_change():
    panel = ConfigPanel(TrainConfig(gpu="T4", batch_size=4, seq_len=256))
    for batch in (4, 64):
        panel.fields["batch_size"].value = batch
        e = estimate_memory(panel.config)
        bars = {t.name: t.x[0] for t in panel.bar.widget.data}
        assert all(bars[k] == pytest.approx(v) for k, v in e.components.items())
        assert sum(bars.values()) == pytest.approx(e.total_gib, rel=1e-6)
        line = panel.bar.widget.layout.shapes[0]
        assert line.x0 == GPUS["T4"].total_gib
        verdict = "fits" if e.total_gib <= GPUS["T4"].total_gib else "does not fit"
        assert panel.bar.widget.layout.title.text.endswith(f"(T4): {verdict}")
    assert "does not fit" in panel.bar.widget.layout.title.text  # 64 × 256 on a T4
    panel.fields["gpu"].value = "H200"
    assert panel.bar.widget.layout.shapes[0].x0 == GPUS["H200"].total_gib
    assert panel.bar.figure().data[0].x == panel.bar.widget.data[0].x  # the static copy an HTML export shows


def test_the_dataset_field_reads_the_name_once_and_shows_a_bad_one_inline(tmp_path):
    panel = ConfigPanel(TrainConfig())
    panel.fields["dataset"].value = str(tmp_path / "missing.jsonl")
    assert panel.error.field == "dataset" and "no such file" in str(panel.error)
    assert panel.config.dataset == "email_subject" and panel.tabs.selected_index == 2  # the last valid kept
    panel.fields["dataset"].value = write_pairs(tmp_path / "mine.jsonl", n=20)
    assert panel.error is None and panel.config.dataset.endswith("mine.jsonl")
    (tmp_path / "table.csv").write_text("prompt,completion\na,b\n")
    panel.fields["dataset"].value = str(tmp_path / "table.csv")
    assert panel.error.field == "dataset"


def test_a_data_panel_joins_the_data_tab_its_file_is_the_dataset_and_seq_len_moves_together(tokenizer, tmp_path):
    data = DataPanel(tokenizer, path=write_pairs(tmp_path / "mine.jsonl"), seq_len=64)
    panel = ConfigPanel(TrainConfig(seq_len=96), data=data)
    assert data.widget in panel.tabs.children[2].children
    assert panel.config.dataset == data.path and panel.uses_own_data
    assert data.fields["seq_len"].value == data.seq_len == 96  # the panel's value wins at the start
    data.fields["seq_len"].value = 200
    assert panel.config.seq_len == 200 and panel.estimate == estimate_memory(panel.config)
    panel.fields["seq_len"].value = 48
    assert data.seq_len == 48 and data.report["examples"] == 200
    train, val = panel.data_for(panel.config, tokenizer)
    assert (len(train), len(val)) == (180, 20) and train == data.records()[0]
    panel.fields["dataset"].value = "definitions"  # back to an embedded dataset: sft_data's records
    assert not panel.uses_own_data
    panel.fields["seq_len"].value = 128
    train, val = panel.data_for(panel.config, tokenizer)
    assert len(train) == panel.config.max_steps * panel.config.batch_size and len(val) == 16
    with pytest.raises(ConfigError, match="data="):
        ConfigPanel(TrainConfig(), data="mine.jsonl")


def test_a_users_200_pair_jsonl_trains_from_the_panel_with_no_code(tiny_model, tokenizer, tiny_folder, tmp_path):
    """What a person does: upload the file in the data tab, press Run. The run trains on the file's training split
    and validates on its held-out examples."""
    from ftlab.models import BaseModels
    from ftlab.runs import panel_trainer
    from ftlab.widgets import RunControls
    data = DataPanel(tokenizer)
    cfg = TrainConfig(model=tiny_folder, max_steps=3, batch_size=2, seq_len=96, output_dir=str(tmp_path / "run"))
    panel = ConfigPanel(cfg, data=data)
    content = open(write_pairs(tmp_path / "mine.jsonl"), "rb").read()
    data.upload.value = ({"name": "mine.jsonl", "type": "", "size": len(content), "content": memoryview(content),
                          "last_modified": datetime.now(timezone.utc)},)
    assert data.error is None and panel.uses_own_data, data.message.value
    seen = []
    controls = RunControls(panel, panel_trainer(BaseModels(tiny_model, tokenizer, tiny_folder, 16), panel.data_for),
                           listeners=[seen.append])
    controls.run_button.click()
    result = controls.current.wait(300)
    assert controls.current.error is None, controls.status.value
    assert result.steps == 3 and result.examples == 180 and "done: 3 steps" in controls.status.value
    assert result.eval_loss_before is not None and result.eval_loss_after is not None  # the file's 20 held out
    assert [e["step"] for e in seen if e.get("kind") == "step"] == [1, 2, 3]


class _Run:
    def __init__(self):
        self.running = True


def test_the_playground_generates_nothing_while_a_run_changes_the_weights(tiny_model, tokenizer):
    from types import SimpleNamespace
    from peft import LoraConfig, get_peft_model
    from ftlab.widgets import Playground
    model = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    controls = SimpleNamespace(current=_Run())
    play = Playground(model, tokenizer, controls=controls, max_new_tokens=3)
    play.fields["prompt"].value = "hello"
    assert play.generate() is None and "model" in play.errors and "Stop" in play.message.value
    controls.current.running = False  # the run ended: the same click answers
    answers = play.generate()
    assert set(answers) == {"base", "trained"} and play.errors == {}
    with pytest.raises(ConfigError, match="controls="):
        Playground(model, tokenizer, controls="controls")
