"""Bad inputs to the model, quantisation, saved-run and resume entry points (ftlab.models, ftlab.quant,
ftlab.methods.load_trained/save_trained, ftlab.guard, ftlab.measure). Each row: a call that must fail, the
error class, and the words its message must hold (the field first, then the value shown and what to do).
Tiny models in tmp folders only; the embedded SmolLM2 is used for its tokenizer alone."""
import functools
import json
import os

import numpy as np
import pytest
import torch

from ftlab.config import TrainConfig
from ftlab.errors import CheckpointError, ConfigError, FtlabError, ModelNotFoundError


@functools.lru_cache(maxsize=1)
def _tok():
    from ftlab.models import load_tokenizer
    return load_tokenizer("smollm2-135m-instruct")


def _tiny(hidden=32, layers=2):
    from ftlab.models import tiny_test_model
    torch.manual_seed(0)
    return tiny_test_model(layers=layers, hidden=hidden)


def _folder(tmp, name="m", hidden=32, layers=2, tokenizer=True, **save):
    """A saved tiny model (config.json, model.safetensors and, unless told, the tokenizer)."""
    path = tmp / name
    _tiny(hidden, layers).save_pretrained(path, **save)
    if tokenizer:
        _tok().save_pretrained(path)
    return path


def _rewrite_weights(path, change):
    """model.safetensors rewritten as change(state dict) says: a truncated or mismatched checkpoint."""
    from safetensors.torch import load_file, save_file
    sd = change(load_file(path / "model.safetensors"))
    save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
    return path


def _load(path_or_name, **kw):
    """load_model on the CPU (a pathlib.Path is passed as is: load_model takes paths)."""
    from ftlab.models import load_model
    return load_model(path_or_name, **{"device": "cpu", **kw})


def _model_kw(**kw):
    """load_model with one bad argument, on a folder that does not exist: the argument is refused first."""
    return lambda tmp: _load(tmp / "never-read", **kw)


# --- model folders -------------------------------------------------------------------------------------

def no_weights(tmp):
    path = _folder(tmp)
    os.remove(path / "model.safetensors")
    return _load(path)


def bin_only(tmp):
    path = _folder(tmp)
    os.remove(path / "model.safetensors")
    (path / "pytorch_model.bin").write_bytes(b"pickle")
    return _load(path)


def no_config(tmp):
    path = _folder(tmp)
    os.remove(path / "config.json")
    return _load(path)


def config_not_json(tmp):
    path = _folder(tmp)
    (path / "config.json").write_text('{"model_type": "llama",')
    return _load(path)


def config_without_model_type(tmp):
    path = _folder(tmp)
    cfg = json.loads((path / "config.json").read_text())
    del cfg["model_type"]
    (path / "config.json").write_text(json.dumps(cfg))
    return _load(path)


def config_unknown_model_type(tmp):
    path = _folder(tmp)
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "llamaz"
    (path / "config.json").write_text(json.dumps(cfg))
    return _load(path)


def truncated_weights(tmp):  # a partial state dict: layer 1 would be random
    path = _rewrite_weights(_folder(tmp), lambda sd: {k: v for k, v in sd.items() if "layers.1." not in k})
    return _load(path)


def truncated_weights_for_classification(tmp):  # the new head may be missing, layer 1 may not
    path = _rewrite_weights(_folder(tmp), lambda sd: {k: v for k, v in sd.items() if "layers.1." not in k})
    return _load(path, for_classification=2)


def mismatched_weights(tmp):
    path = _rewrite_weights(_folder(tmp), lambda sd: {**sd, "model.norm.weight": torch.ones(16)})
    return _load(path)


def damaged_safetensors(tmp):
    path = _folder(tmp)
    (path / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    return _load(path)


def shard_missing(tmp):
    path = _folder(tmp, max_shard_size="100KB")
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) >= 2, shards
    os.remove(path / shards[-1])
    return _load(path)


def no_tokenizer(tmp):
    return _load(_folder(tmp, tokenizer=False))


def adapter_folder_as_model(tmp):
    path = tmp / "adapter"
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"")
    return _load(path)


def model_is_a_file(tmp):
    path = _folder(tmp)
    return _load(path / "model.safetensors")


def tokenizer_without_tokenizer(tmp):
    from ftlab.models import load_tokenizer
    return load_tokenizer(str(_folder(tmp, tokenizer=False)))


def arch_of_home_folder(tmp):  # "~" is expanded: the message shows the folder looked for
    from ftlab.models import resolve_arch
    return resolve_arch("~/no-such-ftlab-model-xyz")


def arch_of_folder_without_config(tmp):
    from ftlab.models import resolve_arch
    (tmp / "empty").mkdir()
    return resolve_arch(str(tmp / "empty"))


def no_cuda(tmp):
    import unittest.mock
    with unittest.mock.patch("torch.cuda.is_available", return_value=False):
        return _load(_folder(tmp), device="cuda")


def quant(bits, **kw):
    from ftlab.quant import quantization_config
    return lambda tmp: quantization_config(bits, **kw)


def load_tokenizer_of(value):
    def f(tmp):
        from ftlab.models import load_tokenizer
        return load_tokenizer(value)
    return f


def resolve_arch_of(value):
    def f(tmp):
        from ftlab.models import resolve_arch
        return resolve_arch(value)
    return f


# --- saved runs (load_trained / save_trained) ------------------------------------------------------------

def _lora_adapter(tmp, hidden=64):
    """A LoRA adapter trained (in name) on a tiny model of the given hidden size, saved as finetune saves it."""
    from ftlab.methods import apply_method, save_trained
    cfg = TrainConfig(method="lora", lora_r=2, output_dir=str(tmp / "run"))
    return save_trained(apply_method(_tiny(hidden), cfg), str(tmp / "run" / "adapter"), cfg)


def adapter_onto_other_base(tmp):
    from ftlab.methods import load_trained
    return load_trained(_tiny(hidden=32), _lora_adapter(tmp, hidden=64))


def adapter_onto_deeper_base(tmp):
    from ftlab.methods import load_trained
    return load_trained(_tiny(hidden=64, layers=3), _lora_adapter(tmp, hidden=64))


def folder_without_method_json(tmp):
    from ftlab.methods import load_trained
    folder = _lora_adapter(tmp)
    os.remove(os.path.join(folder, "ftlab_method.json"))
    return load_trained(_tiny(64), folder)


def trained_folder_missing(tmp):
    from ftlab.methods import load_trained
    return load_trained(_tiny(64), str(tmp / "run" / "adapter"))


def method_json_damaged(tmp):
    from ftlab.methods import load_trained
    folder = _lora_adapter(tmp)
    with open(os.path.join(folder, "ftlab_method.json"), "w") as f:
        f.write('{"method": "lora"')
    return load_trained(_tiny(64), folder)


def adapter_weights_missing(tmp):
    from ftlab.methods import load_trained
    folder = _lora_adapter(tmp)
    os.remove(os.path.join(folder, "adapter_model.safetensors"))
    return load_trained(_tiny(64), folder)


def base_is_the_pair(tmp):
    from ftlab.methods import load_trained
    return load_trained((_tiny(64), _tok()), _lora_adapter(tmp))


def save_without_config(tmp):
    from ftlab.methods import apply_method, save_trained
    cfg = TrainConfig(method="lora", lora_r=2, output_dir=str(tmp / "run"))
    return save_trained(apply_method(_tiny(64), cfg), str(tmp / "out"), cfg.to_dict())


def save_lora_model_as_ia3(tmp):
    from ftlab.methods import apply_method, save_trained
    model = apply_method(_tiny(64), TrainConfig(method="lora", lora_r=2, output_dir=str(tmp / "run")))
    return save_trained(model, str(tmp / "out"), TrainConfig(method="ia3", output_dir=str(tmp / "run")))


def save_unapplied_model(tmp):
    from ftlab.methods import save_trained
    return save_trained(_tiny(64), str(tmp / "out"), TrainConfig(method="lora", output_dir=str(tmp / "run")))


# --- resume -------------------------------------------------------------------------------------------

STATE = {"global_step": 3, "log_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.9}]}


def _checkpoint(tmp, state=STATE, run=None, peft_type="LORA", files=("optimizer.pt",)):
    """A fabricated output_dir/checkpoint: trainer state, adapter weights, optimizer state, the run's config."""
    from safetensors.torch import save_file
    folder = tmp / "run" / "checkpoint"
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    save_file({"w": torch.zeros(2)}, str(folder / "adapter_model.safetensors"))
    if peft_type:
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": 2, "lora_alpha": 16.0}))
    for f in files:
        torch.save({}, folder / f)
    if run is not None:
        (folder / "ftlab_config.json").write_text(json.dumps({"method": run.method, "config": run.to_dict()}))
    return folder


def _run(tmp, **kw):
    return TrainConfig(**{"method": "lora", "lora_r": 2, "output_dir": str(tmp / "run"), **kw})


def resume(make_checkpoint, **kw):
    def f(tmp):
        from ftlab.checkpoints import checkpoint_for
        make_checkpoint(tmp)
        return checkpoint_for(_run(tmp, **kw))
    return f


RESUME_BROKEN_JSON = resume(lambda t: _checkpoint(t, state='{"global_step": 3, "log_hist'))
RESUME_NO_HISTORY = resume(lambda t: _checkpoint(t, state={"global_step": 3}))
RESUME_NO_STATE = resume(lambda t: _checkpoint(t, state=None))
RESUME_BAD_ENTRY = resume(lambda t: _checkpoint(t, state={"global_step": 3, "log_history": [{"loss": 2.0}]}))
RESUME_NO_OPTIMIZER = resume(lambda t: _checkpoint(t, files=()))
RESUME_OTHER_METHOD = resume(lambda t: _checkpoint(t, run=_run(t)), method="ia3")
RESUME_OTHER_RANK = resume(lambda t: _checkpoint(t, run=_run(t)), lora_r=8)
RESUME_OTHER_MODEL = resume(lambda t: _checkpoint(t, run=_run(t)), model="qwen2.5-0.5b-instruct")
RESUME_OTHER_BITS = resume(lambda t: _checkpoint(t, run=_run(t)), method="qlora", bits=4)
RESUME_OLD_CHECKPOINT_OTHER_METHOD = resume(lambda t: _checkpoint(t), method="ia3")  # no ftlab_config.json
RESUME_OLD_CHECKPOINT_NOT_PEFT = resume(lambda t: _checkpoint(t, peft_type=None))


def monitor(**kw):
    def f(tmp):
        from ftlab.measure import MemoryMonitor
        return MemoryMonitor(**kw)
    return f


def mark_before_start(tmp):
    from ftlab.measure import MemoryMonitor
    return MemoryMonitor(device="cpu").mark("after_load")


CASES = [
    # local model folders: what is wrong with the folder, never "the hub could not serve it"
    ("no weights", no_weights, ModelNotFoundError, ["model", "no weights found", "config.json", "save_pretrained"]),
    (".bin only", bin_only, ModelNotFoundError,
     ["model", ".bin weights only", "pytorch_model.bin", "safetensors only", "safe_serialization=True"]),
    ("no config.json", no_config, ModelNotFoundError, ["model", "no config.json", "model.safetensors"]),
    ("config.json not JSON", config_not_json, ModelNotFoundError, ["model", "config.json is not valid JSON"]),
    ("config.json without model_type", config_without_model_type, ModelNotFoundError, ["model", "model_type"]),
    ("unknown model_type", config_unknown_model_type, ModelNotFoundError, ["model", "'llamaz'", "transformers"]),
    ("truncated safetensors", truncated_weights, ModelNotFoundError,
     ["model", "lack 9", "model.layers.1.", "random", "save_pretrained"]),
    ("truncated, for classification", truncated_weights_for_classification, ModelNotFoundError,
     ["model", "lack 9", "model.layers.1."]),
    ("weights of other shapes", mismatched_weights, ModelNotFoundError,
     ["model", "model.norm.weight", "(16,)", "(32,)"]),
    ("damaged safetensors", damaged_safetensors, ModelNotFoundError, ["model", "model.safetensors is damaged"]),
    ("a shard missing", shard_missing, ModelNotFoundError, ["model", "model.safetensors.index.json", "missing"]),
    ("no tokenizer", no_tokenizer, ModelNotFoundError, ["model", "no tokenizer", "tokenizer.save_pretrained(folder)"]),
    ("adapter folder as model", adapter_folder_as_model, ModelNotFoundError, ["model", "adapter", "load_trained"]),
    ("model path is a file", model_is_a_file, ModelNotFoundError, ["model", "is a file", "folder"]),
    ("no such folder", lambda tmp: _load(tmp / "nope"), ModelNotFoundError, ["model", "no such folder", "nope"]),
    ("invalid hub id", lambda tmp: _load("a b/c d"), ModelNotFoundError, ["model", "'a b/c d'", "hub id"]),
    ("tokenizer folder without tokenizer", tokenizer_without_tokenizer, ModelNotFoundError, ["model", "no tokenizer"]),
    ("~ expanded in resolve_arch", arch_of_home_folder, ModelNotFoundError,
     ["model", os.path.expanduser("~/no-such-ftlab-model-xyz"), "no such folder"]),
    ("resolve_arch: no config.json", arch_of_folder_without_config, ModelNotFoundError, ["model", "no config.json"]),
    ("resolve_arch: unknown bare name", resolve_arch_of("gpt-9000"), ModelNotFoundError,
     ["model", "gpt-9000", "Presets"]),
    ("resolve_arch: a number", resolve_arch_of(42), ConfigError, ["model", "42", "preset"]),
    # arguments, checked before anything is read
    ("model a number", lambda tmp: _load(42), ConfigError, ["model", "42", "preset name", "local folder"]),
    ("model None", lambda tmp: _load(None), ConfigError, ["model", "None", "non-empty string"]),
    ("model empty", lambda tmp: _load("  "), ConfigError, ["model", "'  '", "non-empty string"]),
    ("load_tokenizer a number", load_tokenizer_of(7), ConfigError, ["model", "7", "preset"]),
    ("device gpu", _model_kw(device="gpu"), ConfigError, ["device", "'gpu'", "'cpu'"]),
    ("device cuda:7", _model_kw(device="cuda:7"), ConfigError, ["device", "'cuda:7'", "'cpu'"]),
    ("device cuda without CUDA", no_cuda, ConfigError, ["device", "'cuda'", "'cpu'", "no CUDA"]),
    ("device a number", _model_kw(device=0), ConfigError, ["device", "0", "'cpu'"]),
    ("bits 3", _model_kw(bits=3), ConfigError, ["bits", "3", "[32, 16, 8, 4]"]),
    ("bits a string", _model_kw(bits="4"), ConfigError, ["bits", "'4'", "[32, 16, 8, 4]"]),
    ("bits a float", _model_kw(bits=4.0), ConfigError, ["bits", "4.0", "[32, 16, 8, 4]"]),
    ("quant_type nf3", _model_kw(quant_type="nf3"), ConfigError, ["quant_type", "'nf3'", "'nf4'", "'fp4'"]),
    ("double_quant a string", _model_kw(double_quant="yes"), ConfigError, ["double_quant", "'yes'", "True or False"]),
    ("dtype unknown", _model_kw(dtype="float8"), ConfigError, ["dtype", "'float8'", "torch.bfloat16"]),
    ("dtype against bits=32", _model_kw(bits=32, dtype=torch.bfloat16), ConfigError, ["dtype", "bfloat16", "bits=32"]),
    ("trust_remote_code a string", _model_kw(trust_remote_code="False"), ConfigError,
     ["trust_remote_code", "'False'", "True or False"]),
    ("for_classification 0", _model_kw(for_classification=0), ConfigError, ["for_classification", "0", "≥ 1"]),
    ("for_classification True", _model_kw(for_classification=True), ConfigError,
     ["for_classification", "True", "number of labels"]),
    ("quantization_config bits 5", quant(5), ConfigError, ["bits", "5", "[32, 16, 8, 4]"]),
    ("quantization_config quant_type", quant(4, quant_type="int4"), ConfigError, ["quant_type", "'int4'", "'nf4'"]),
    # saved runs
    ("adapter onto another base", adapter_onto_other_base, CheckpointError,
     ["folder", "model='smollm2-135m-instruct'", "hidden 64", "hidden_size 32", "lora_A.weight",
      "saved [2, 64] vs base [2, 32]", "load_model"]),
    ("adapter onto a deeper base", adapter_onto_deeper_base, CheckpointError,
     ["folder", "layers: trained on 2, base 3", "load_model"]),
    ("no ftlab_method.json", folder_without_method_json, CheckpointError,
     ["folder", "no ftlab_method.json", "adapter_config.json", "output_dir/adapter", "PeftModel.from_pretrained"]),
    ("trained folder missing", trained_folder_missing, CheckpointError, ["folder", "no such folder", "saved_to"]),
    ("ftlab_method.json damaged", method_json_damaged, CheckpointError, ["folder", "ftlab_method.json is damaged"]),
    ("adapter weights missing", adapter_weights_missing, CheckpointError,
     ["folder", "adapter_model.safetensors is missing", "save the run again"]),
    ("base is (model, tokenizer)", base_is_the_pair, ConfigError, ["base", "load_model(...)[0]"]),
    ("save_trained without a TrainConfig", save_without_config, ConfigError, ["cfg", "TrainConfig"]),
    ("save_trained of an unapplied model", save_unapplied_model, ConfigError, ["model", "apply_method", "'lora'"]),
    ("save_trained, model of another method", save_lora_model_as_ia3, ConfigError,
     ["method", "'ia3'", "LORA adapter"]),
    # resume
    ("resume: trainer_state.json not JSON", RESUME_BROKEN_JSON, CheckpointError,
     ["trainer_state.json", "not valid JSON", "resume=True"]),
    ("resume: no log_history", RESUME_NO_HISTORY, CheckpointError, ["trainer_state.json", "log_history"]),
    ("resume: trainer_state.json missing", RESUME_NO_STATE, CheckpointError, ["trainer_state.json", "missing"]),
    ("resume: a history entry without step", RESUME_BAD_ENTRY, CheckpointError,
     ["trainer_state.json", "log_history entry 0", "step"]),
    ("resume: optimizer.pt missing", RESUME_NO_OPTIMIZER, CheckpointError, ["optimizer.pt", "missing"]),
    ("resume: another method", RESUME_OTHER_METHOD, CheckpointError,
     ["method", "saved by method='lora'", "this run is method='ia3'", "resume=False"]),
    ("resume: another lora_r", RESUME_OTHER_RANK, CheckpointError, ["lora_r", "lora_r=2", "lora_r=8"]),
    ("resume: another model", RESUME_OTHER_MODEL, CheckpointError,
     ["model", "'smollm2-135m-instruct'", "'qwen2.5-0.5b-instruct'"]),
    ("resume: another bit width", RESUME_OTHER_BITS, CheckpointError, ["method", "'lora'", "'qlora'"]),
    ("resume: old checkpoint, another method", RESUME_OLD_CHECKPOINT_OTHER_METHOD, CheckpointError,
     ["method", "LORA", "'ia3'"]),
    ("resume: old checkpoint without adapter", RESUME_OLD_CHECKPOINT_NOT_PEFT, CheckpointError,
     ["method", "no peft adapter", "'lora'"]),
    # memory monitor
    ("MemoryMonitor device gpu", monitor(device="gpu"), ConfigError, ["device", "'gpu'", "'cpu'"]),
    ("MemoryMonitor interval 0", monitor(interval_s=0), ConfigError, ["interval_s", "0", "> 0"]),
    ("MemoryMonitor mark before start", mark_before_start, FtlabError, ["after_load", "start()"]),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,call,error,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(name, call, error, words, tmp_path):
    with pytest.raises(error) as info:
        call(tmp_path)
    err = info.value
    msg = str(err)
    assert type(err) is error or error is FtlabError, f"{name}: {type(err).__name__}: {msg}"
    for word in words:
        assert word in msg, f"{name}: {word!r} not in {msg!r}"
    if getattr(err, "field", None) is not None:
        assert err.field == words[0], f"{name}: field {err.field!r}, expected {words[0]!r}"
        assert err.field in msg


# --- what must keep working ----------------------------------------------------------------------------

def test_numpy_integers_are_accepted(tmp_path):
    from ftlab.quant import quantization_config
    model, tok = _load(_folder(tmp_path), bits=np.int64(16), for_classification=np.int32(3))
    assert model.config.num_labels == 3 and model.ftlab_info["bits"] == 16 and type(model.ftlab_info["bits"]) is int
    assert quantization_config(np.int64(16)) is None


def test_a_good_folder_loads_without_complaint_tied_and_sharded(tmp_path, recwarn):
    """Tied embeddings (no lm_head in the file) and sharded safetensors are complete checkpoints."""
    for name, save in (("tied", {}), ("sharded", {"max_shard_size": "100KB"})):
        path = _folder(tmp_path, name, **save)
        if save:
            assert (path / "model.safetensors.index.json").is_file()
        model, _ = _load(path)
        ref = _tiny()
        assert all(torch.equal(p, ref.state_dict()[n]) for n, p in model.state_dict().items())
    # a classification load: only the new head is new
    model, _ = _load(_folder(tmp_path, "cls"), for_classification=2)
    assert model.score.weight.shape == (2, 32)
    assert not [w for w in recwarn if "ftlab" in str(w.message) or "model=" in str(w.message)]


def test_tilde_is_expanded_everywhere(tmp_path, monkeypatch):
    from ftlab.models import load_model, load_tokenizer, resolve_arch, resolve_source
    monkeypatch.setenv("HOME", str(tmp_path))
    _folder(tmp_path, "mine")
    assert resolve_source("~/mine") == str(tmp_path / "mine")
    assert resolve_arch("~/mine").hidden == 32
    assert load_tokenizer("~/mine").pad_token is not None
    assert load_model("~/mine", device="cpu")[0].ftlab_info["source"] == str(tmp_path / "mine")


def test_an_adapter_reloads_onto_its_own_base(tmp_path):
    from ftlab.methods import load_trained
    model = load_trained(_tiny(64), _lora_adapter(tmp_path, hidden=64))
    assert hasattr(model, "peft_config")


def test_base_models_key_on_model_bits_4bit_code_and_remote_code(monkeypatch):
    import ftlab.models.loading
    from ftlab.models import BaseModels
    fresh = object()
    monkeypatch.setattr(ftlab.models.loading, "load_for", lambda cfg: fresh)

    def held(**info):
        m = torch.nn.Linear(1, 1)
        m.ftlab_info = {"bits": 4, "quant_type": "nf4", "double_quant": True, "trust_remote_code": False, **info}
        return m

    qlora = dict(method="qlora", bits=4, output_dir="runs/x")
    m = held()
    assert BaseModels(m, "tok", "smollm2-135m-instruct").get(TrainConfig(**qlora))[0] is m
    # the hub id of the same preset is the same model
    m = held()
    assert BaseModels(m, "tok", "HuggingFaceTB/SmolLM2-135M-Instruct", 4).get(TrainConfig(**qlora))[0] is m
    for other in (dict(quant_type="fp4"), dict(double_quant=False), dict(trust_remote_code=True)):
        assert BaseModels(held(), "tok", "smollm2-135m-instruct", 4).get(TrainConfig(**qlora, **other)) is fresh
    assert BaseModels(held(), "tok", "smollm2-135m-instruct", 4).get(TrainConfig(output_dir="runs/x")) is fresh
    # at 16 bits the 4-bit code does not matter
    m = torch.nn.Linear(1, 1)
    assert BaseModels(m, "tok", "smollm2-135m-instruct", np.int64(16)).get(
        TrainConfig(quant_type="fp4", double_quant=False, output_dir="runs/x"))[0] is m


def test_a_matching_resume_passes_and_may_change_steps_batch_and_rate(tmp_path):
    from ftlab.checkpoints import check_resumable, checkpoint_for
    folder = _checkpoint(tmp_path, run=_run(tmp_path))
    assert checkpoint_for(_run(tmp_path, max_steps=60, batch_size=2, learning_rate=1e-3)) == str(folder)
    assert check_resumable(_run(tmp_path, lora_dropout=0.1), folder) == str(folder)
    assert checkpoint_for(_run(tmp_path / "elsewhere")) is None  # no checkpoint: the caller says so


def test_oom_never_suggests_a_fix_the_config_refuses():
    from ftlab.guard import oom_message
    msg = oom_message(TrainConfig(method="prefix_tuning", output_dir="runs/x"), RuntimeError("CUDA out of memory"))
    assert "gradient_checkpointing" not in msg and "batch_size=2" in msg
    # an unknown model offline: no estimate, the fixes are still listed
    msg = oom_message(TrainConfig(model="someone/not-cached-xyz", output_dir="runs/x"), RuntimeError("oom"))
    assert "gradient_checkpointing=True" in msg and "batch_size=2" in msg
