"""A table of bad inputs across the API, the data files and the widget panel. Each must be answered by a
ValueError (or a precise subclass) whose message names the field, shows the bad value and says what
is allowed; in the panel, by an inline message and no traceback. The count is asserted (≥ 30)."""
import os

import pytest

from ftlab.config import TrainConfig

SMOL = "smollm2-135m-instruct"


def cfg(**kw):
    return lambda tmp: TrainConfig(**{"output_dir": str(tmp / "run"), **kw})


def setup(**kw):
    from ftlab.methods import check_setup
    return lambda tmp: check_setup(TrainConfig(**{"output_dir": str(tmp / "run"), **kw}))


def data_file(content: bytes):
    def f(tmp):
        from ftlab.data import load_records
        path = tmp / "mine.jsonl"
        path.write_bytes(content)
        return load_records(str(path))
    return f


def no_bnb(tmp):
    import ftlab.quant
    from ftlab.methods import check_setup
    real = ftlab.quant.bitsandbytes_available
    ftlab.quant.bitsandbytes_available = lambda: (False, "bitsandbytes has no backend for this platform")
    try:
        check_setup(TrainConfig(method="qlora", bits=4, output_dir=str(tmp / "run")))
    finally:
        ftlab.quant.bitsandbytes_available = real


def output_is_a_file(tmp):
    (tmp / "taken").write_text("x")
    return TrainConfig(output_dir=str(tmp / "taken"))


def output_not_writable(tmp):
    from ftlab.results import check_output_dir
    return check_output_dir("/proc/ftlab-cannot-write-here")  # not writable, even for root


def empty_training_data(tmp):
    from ftlab.train import train_sft
    return train_sft(None, None, [], TrainConfig(output_dir=str(tmp / "run")))


def unknown_model(tmp):
    from ftlab.models import load_model
    return load_model("no-such-org/no-such-model-xyz")


def unknown_dataset(tmp):
    from ftlab.data import load_records
    return load_records("no_such_dataset")


def estimate(**kw):
    from ftlab.memory import estimate_memory
    return lambda tmp: estimate_memory(SMOL, **kw)


def escape(name):
    from ftlab.results import inside
    return lambda tmp: inside(tmp / "runs", name)


# (id, call, words the message must contain: the field, the bad value, and what is allowed)
CASES = [
    ("rank 0", cfg(lora_r=0), ["lora_r", "0", "integer from 1"]),
    ("rank negative", cfg(lora_r=-4), ["lora_r", "-4", "integer from 1"]),
    ("rank not an integer", cfg(lora_r=2.5), ["lora_r", "2.5", "integer"]),
    ("rank a string", cfg(lora_r="8"), ["lora_r", "'8'", "integer"]),
    ("rank larger than the layer", setup(lora_r=256), ["lora_r", "256", "at most 192"]),
    ("alpha 0", cfg(lora_alpha=0), ["lora_alpha", "0", "> 0"]),
    ("alpha negative", cfg(lora_alpha=-16.0), ["lora_alpha", "-16.0", "> 0"]),
    ("dropout 1", cfg(lora_dropout=1.0), ["lora_dropout", "1.0", "[0, 1)"]),
    ("dropout negative", cfg(lora_dropout=-0.1), ["lora_dropout", "-0.1", "[0, 1)"]),
    ("unknown method", cfg(method="lorax"), ["method", "'lorax'", "'lora'"]),
    ("unknown GPU", cfg(gpu="RTX-9090"), ["gpu", "'RTX-9090'", "'T4'"]),
    ("bits 3", cfg(bits=3), ["bits", "3", "[32, 16, 8, 4]"]),
    ("qlora at 16 bits", cfg(method="qlora", bits=16), ["bits", "16", "4 with method='qlora'"]),
    ("full on a 4-bit base", cfg(method="full", bits=4), ["bits", "4", "16 or 32"]),
    ("4-bit without bitsandbytes", no_bnb, ["bits", "4", "16 or 32", "no backend"]),
    ("unknown 4-bit type", cfg(quant_type="int4"), ["quant_type", "'int4'", "'nf4'"]),
    ("batch 0", cfg(batch_size=0), ["batch_size", "0", "integer from 1"]),
    ("steps 0", cfg(max_steps=0), ["max_steps", "0", "integer from 1"]),
    ("steps negative", cfg(max_steps=-5), ["max_steps", "-5", "integer from 1"]),
    ("sequence length 0", cfg(seq_len=0), ["seq_len", "0", "integer from 8"]),
    ("sequence longer than the model's positions", setup(seq_len=9000), ["seq_len", "9000", "at most 8192"]),
    ("learning rate 0", cfg(learning_rate=0.0), ["learning_rate", "0.0", "> 0"]),
    ("learning rate NaN", cfg(learning_rate=float("nan")), ["learning_rate", "nan", "finite number"]),
    ("learning rate negative", cfg(learning_rate=-1e-4), ["learning_rate", "-0.0001", "> 0"]),
    ("unknown target shortcut", cfg(lora_targets="qv"), ["lora_targets", "'qv'", "'q,v'"]),
    ("empty target list", cfg(lora_targets=[]), ["lora_targets", "[]", "non-empty list"]),
    ("targets the model lacks", setup(lora_targets=["c_attn"]), ["lora_targets", "c_attn", "q_proj"]),
    ("zero virtual tokens", cfg(method="prompt_tuning", num_virtual_tokens=0), ["num_virtual_tokens", "0", "from 1"]),
    ("top-k beyond the model's blocks", setup(method="top_k", top_k_layers=99), ["top_k_layers", "99", "1 to 30"]),
    ("adapter wider than the model", setup(method="adapter", adapter_size=4096), ["adapter_size", "4096", "1 to 576"]),
    ("BitFit on a model without biases", setup(method="bitfit"), ["method", "bitfit", "ln_tuning"]),
    ("unknown optimizer", cfg(optimizer="adam"), ["optimizer", "'adam'", "'adamw'"]),
    ("unknown model", unknown_model, ["model=", "no-such-org/no-such-model-xyz", "Presets"]),
    ("unknown dataset", unknown_dataset, ["dataset", "'no_such_dataset'", "email_subject"]),
    ("empty training data", empty_training_data, ["train_records", "empty", "at least one"]),
    ("JSONL malformed line", data_file(b'{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n'),
     ["mine.jsonl:2", "malformed JSON", "one JSON object"]),
    ("JSONL missing field", data_file(b'{"prompt": "a"}\n'), ["mine.jsonl:1", "'completion'", "required fields"]),
    ("JSONL non-UTF-8 byte", data_file(b'{"prompt": "caf\xe9", "completion": "b"}\n'),
     ["mine.jsonl:1", "not UTF-8", "0xe9", "UTF-8"]),
    ("JSONL empty completion", data_file(b'{"prompt": "a", "completion": "  "}\n'),
     ["mine.jsonl:1", "'completion'", "empty"]),
    ("JSONL empty file", data_file(b"\n\n"), ["mine.jsonl", "empty", "at least one record"]),
    ("output folder is a file", output_is_a_file, ["output_dir", "taken", "a folder"]),
    ("output folder not writable", output_not_writable, ["output_dir", "/proc/ftlab-cannot-write-here", "can write"]),
    ("output path escaping upwards", escape("../../etc"), ["output_dir", "'../../etc'", "inside"]),
    ("output path absolute", escape("/etc/ftlab"), ["output_dir", "'/etc/ftlab'", "inside"]),
    ("calculator: unknown GPU", estimate(gpu="A999"), ["gpu", "'A999'", "'T4'"]),
    ("calculator: batch 0", estimate(batch_size=0), ["batch_size", "0", "≥ 1"]),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name,call,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_value_error(name, call, words, tmp_path):
    with pytest.raises(ValueError) as info:
        call(tmp_path)
    msg = str(info.value)
    missing = [w for w in words if w not in msg]
    assert not missing, f"{name}: message lacks {missing}: {msg}"
    assert "Traceback" not in msg


# The same mistakes typed into the panel: an inline message naming the field; the config stays valid.
PANEL = [
    ("lora_alpha", 0.0), ("lora_alpha", -1.0), ("batch_size", 0), ("max_steps", -1), ("seq_len", 0),
    ("learning_rate", 0.0), ("learning_rate", float("nan")), ("num_virtual_tokens", 0), ("adapter_size", 0),
    ("top_k_layers", 0), ("lora_targets", "c_attn"), ("lora_r", 256), ("output_dir", "../../etc"),
    ("output_dir", "/etc"),
]


@pytest.mark.parametrize("field,value", PANEL, ids=[f"{f}={v!r}" for f, v in PANEL])
def test_bad_input_in_the_panel_shows_inline(field, value, tmp_path):
    from ftlab.widgets import ConfigPanel
    panel = ConfigPanel(TrainConfig(output_dir=str(tmp_path / "runs" / "quickstart")))
    good = panel.config
    panel.fields[field].value = value
    assert panel.error is not None and panel.error.field == field, panel.message.value
    assert field in panel.message.value and "⚠" in panel.message.value and "Traceback" not in panel.message.value
    assert panel.config == good  # the last valid set-up is what Run would use
    assert os.path.realpath(panel.config.output_dir).startswith(os.path.realpath(tmp_path / "runs"))
