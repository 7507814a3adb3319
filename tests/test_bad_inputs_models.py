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
from ftlab.errors import CheckpointError, ConfigError, DataError, FtlabError, ModelNotFoundError


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
    from ftlab.methods import apply_method
    from ftlab.trained import save_trained
    cfg = TrainConfig(method="lora", lora_r=2, output_dir=str(tmp / "run"))
    return save_trained(apply_method(_tiny(hidden), cfg), str(tmp / "run" / "adapter"), cfg)


def adapter_onto_other_base(tmp):
    from ftlab.trained import load_trained
    return load_trained(_tiny(hidden=32), _lora_adapter(tmp, hidden=64))


def adapter_onto_deeper_base(tmp):
    from ftlab.trained import load_trained
    return load_trained(_tiny(hidden=64, layers=3), _lora_adapter(tmp, hidden=64))


def folder_without_method_json(tmp):
    from ftlab.trained import load_trained
    folder = _lora_adapter(tmp)
    os.remove(os.path.join(folder, "ftlab_method.json"))
    return load_trained(_tiny(64), folder)


def trained_folder_missing(tmp):
    from ftlab.trained import load_trained
    return load_trained(_tiny(64), str(tmp / "run" / "adapter"))


def method_json_damaged(tmp):
    from ftlab.trained import load_trained
    folder = _lora_adapter(tmp)
    with open(os.path.join(folder, "ftlab_method.json"), "w") as f:
        f.write('{"method": "lora"')
    return load_trained(_tiny(64), folder)


def adapter_weights_missing(tmp):
    from ftlab.trained import load_trained
    folder = _lora_adapter(tmp)
    os.remove(os.path.join(folder, "adapter_model.safetensors"))
    return load_trained(_tiny(64), folder)


def base_is_the_pair(tmp):
    from ftlab.trained import load_trained
    return load_trained((_tiny(64), _tok()), _lora_adapter(tmp))


def save_without_config(tmp):
    from ftlab.methods import apply_method
    from ftlab.trained import save_trained
    cfg = TrainConfig(method="lora", lora_r=2, output_dir=str(tmp / "run"))
    return save_trained(apply_method(_tiny(64), cfg), str(tmp / "out"), cfg.to_dict())


def save_lora_model_as_ia3(tmp):
    from ftlab.methods import apply_method
    from ftlab.trained import save_trained
    model = apply_method(_tiny(64), TrainConfig(method="lora", lora_r=2, output_dir=str(tmp / "run")))
    return save_trained(model, str(tmp / "out"), TrainConfig(method="ia3", output_dir=str(tmp / "run")))


def save_unapplied_model(tmp):
    from ftlab.trained import save_trained
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


# --- the calculator, the method table's entry points, results files (the red-team round) ---------------------

SMOL = "smollm2-135m-instruct"
_ARCH = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "vocab_size": 100}


def calc(**kw):
    def f(tmp):
        from ftlab.memory import estimate_memory
        return estimate_memory(kw.pop("model", SMOL), **kw)
    return f


def calc_config(**changes):
    return calc(model={**_ARCH, **changes})


def counted(arch, method, **kw):
    def f(tmp):
        from ftlab.memory import count_trainable
        from ftlab.models import resolve_arch
        return count_trainable(resolve_arch(SMOL) if arch == "smol" else arch, method, **kw)
    return f


def search(which, gpu="T4", **kw):
    def f(tmp):
        from ftlab import memory
        return getattr(memory, which)(SMOL, gpu, **kw)
    return f


def _cfg(tmp, **kw):
    return TrainConfig(**{"output_dir": str(tmp / "run"), **kw})


def applied(model="tiny", cfg=None, changes=None, **kw):
    """apply_method(model, cfg): model "tiny" is a fresh tiny Llama (hidden 32: k/v 16 wide, 2 blocks), "pair"
    the (model, tokenizer) tuple; cfg a TrainConfig of kw unless given; changes are set after creation."""
    def f(tmp):
        from ftlab.methods import apply_method
        m = {"tiny": _tiny, "pair": lambda: (_tiny(), _tok())}.get(model, lambda: model)() if isinstance(model, str) \
            else model
        c = cfg if cfg is not None else _cfg(tmp, **kw)
        for k, v in (changes or {}).items():
            setattr(c, k, v)
        return apply_method(m, c)
    return f


def applied_twice(on_base: bool):
    def f(tmp):
        from ftlab.methods import apply_method
        base = _tiny()
        once = apply_method(base, _cfg(tmp, lora_r=2))
        return apply_method(base if on_base else once, _cfg(tmp, lora_r=2))
    return f


def setup_with(cfg=None, arch=None):
    def f(tmp):
        from ftlab.methods import check_setup
        return check_setup(_cfg(tmp) if cfg is None else cfg, arch)
    return f


def _prompt_model(tmp):
    from ftlab.methods import apply_method
    return apply_method(_tiny(), _cfg(tmp, method="prompt_tuning", num_virtual_tokens=4))


def nearest(model="prompt", **kw):
    def f(tmp):
        from ftlab.methods import apply_method
        from ftlab.analysis import nearest_vocabulary_tokens
        m = {"prompt": lambda: _prompt_model(tmp), "plain": _tiny,
             "lora": lambda: apply_method(_tiny(), _cfg(tmp, lora_r=2))}[model]()
        return nearest_vocabulary_tokens(m, _tok(), **kw)
    return f


def counted_on_model(model):
    def f(tmp):
        from ftlab.methods import trainable_parameters
        return trainable_parameters(model)
    return f


def loaded_for(cfg):
    def f(tmp):
        from ftlab.models import load_for
        return load_for(cfg)
    return f


def base_models(pair=False, cfg=None):
    def f(tmp):
        from ftlab.models import BaseModels
        held = BaseModels((_tiny(), _tok()), name=SMOL, bits=16) if pair else BaseModels(_tiny(), _tok(), SMOL, 16)
        return held.get(cfg if cfg is not None else _cfg(tmp))
    return f


def report_before_start(tmp):
    from ftlab.measure import MemoryMonitor
    return MemoryMonitor(device="cpu").report()


def written(output_dir="run", results=None):
    def f(tmp):
        from ftlab.results import write_results
        folder = tmp / output_dir if isinstance(output_dir, str) else output_dir
        try:
            return write_results(folder, {} if results is None else results)
        finally:
            if isinstance(folder, os.PathLike) and os.path.isdir(folder):
                assert not [p for p in os.listdir(folder) if p.startswith(".results-")], "temporary file left"
    return f


def read_back(content=None):
    def f(tmp):
        from ftlab.results import read_results
        (tmp / "run").mkdir()
        if content is not None:
            (tmp / "run" / "results.json").write_text(content)
        return read_results(tmp / "run")
    return f


def inside_of(name):
    def f(tmp):
        from ftlab.results import inside
        return inside(tmp / "runs", name)
    return f


def output_dir_of(path):
    def f(tmp):
        from ftlab.results import check_output_dir
        return check_output_dir(path)
    return f


def panel_of(config):
    def f(tmp):
        from ftlab.widgets import ConfigPanel
        return ConfigPanel(config)
    return f


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
    ("MemoryMonitor report before start", report_before_start, FtlabError, ["report()", "before start()"]),
    # the calculator: the numbers of a model's config, settings that need the model's shape, misspelt keywords
    ("calculator: config with 0 heads", calc_config(num_attention_heads=0), ModelNotFoundError,
     ["model", "num_attention_heads=0", "positive integer"]),
    ("calculator: config numbers as strings", calc_config(num_hidden_layers="2"), ModelNotFoundError,
     ["model", "num_hidden_layers='2'", "positive integer"]),
    ("calculator: config with a negative width", calc_config(hidden_size=-64), ModelNotFoundError,
     ["model", "hidden_size=-64", "positive integer"]),
    ("calculator: qlora at 8 bits", calc(method="qlora", bits=8), ConfigError, ["bits", "8", "4 with method='qlora'"]),
    ("calculator: top_k beyond the blocks", calc(method="top_k", top_k_layers=999), ConfigError,
     ["top_k_layers", "999", "from 1 to 30"]),
    ("calculator: rank beyond the layers", calc(lora_r=100000), ConfigError, ["lora_r", "100000", "at most 192"]),
    ("calculator: adapter wider than the model", calc(method="adapter", adapter_size=100000), ConfigError,
     ["adapter_size", "100000", "from 1 to 576"]),
    ("calculator: BitFit without biases", calc(method="bitfit"), ConfigError, ["method", "'bitfit'", "no bias terms"]),
    ("calculator: a misspelt keyword", calc(lora_rank=8), ConfigError, ["lora_rank", "8", "did you mean 'lora_r'"]),
    ("calculator: targets it lacks, as a string", calc(lora_targets="q_proj,c_attn"), ConfigError,
     ["lora_targets", "'q_proj,c_attn'", "no module named ['c_attn']", "'q,v'"]),
    ("count: unknown method", counted("smol", "nonsense"), ConfigError, ["method", "'nonsense'", "'lora'"]),
    ("count: negative rank", counted("smol", "lora", lora_r=-5), ConfigError, ["lora_r", "-5", "integer ≥ 1"]),
    ("count: rank beyond the layers", counted("smol", "lora", lora_r=1000), ConfigError,
     ["lora_r", "1000", "at most 192"]),
    ("count: top_k beyond the blocks", counted("smol", "top_k", top_k_layers=31), ConfigError,
     ["top_k_layers", "31", "from 1 to 30"]),
    ("count: arch a number", counted(42, "lora"), ConfigError, ["arch", "42", "ftlab.models.Arch"]),
    ("count: arch a loaded model", counted(torch.nn.Linear(2, 2), "lora"), ConfigError, ["arch", "a Linear", "Arch"]),
    ("largest batch: a misspelt keyword", search("max_batch_size", lora_rank=8), ConfigError,
     ["lora_rank", "8", "did you mean 'lora_r'", "estimate_memory argument"]),
    ("largest batch: gpu None", search("max_batch_size", gpu=None), ConfigError, ["gpu", "None", "'T4'"]),
    ("longest sequence: virtual tokens a string",
     search("max_seq_len", method="prompt_tuning", num_virtual_tokens="20"), ConfigError,
     ["num_virtual_tokens", "'20'", "integer"]),
    ("longest sequence: a misspelt keyword", search("max_seq_len", batch=1), ConfigError,
     ["batch", "1", "did you mean 'batch_size'"]),
    # loading for a config
    ("load_for a dict", loaded_for({"model": SMOL}), ConfigError, ["cfg", "'model'", "a TrainConfig"]),
    ("BaseModels.get a dict", base_models(cfg={"model": SMOL}), ConfigError, ["cfg", "a TrainConfig"]),
    ("BaseModels given the (model, tokenizer) pair", base_models(pair=True), ConfigError,
     ["model", "a tuple of 2", "BaseModels(model, tokenizer"]),
    # apply_method: every mistake refused before the model changes
    ("apply_method a dict as cfg", applied(cfg={"method": "lora"}), ConfigError,
     ["cfg", "'method': 'lora'", "TrainConfig"]),
    ("apply_method model None", applied(model=None), ConfigError, ["model", "None", "a transformers model"]),
    ("apply_method the (model, tokenizer) pair", applied(model="pair"), ConfigError,
     ["model", "a tuple of 2", "model, tokenizer = load_model(...)"]),
    ("apply_method on its own result", applied_twice(on_base=False), ConfigError,
     ["model", "already carries a LORA adapter", "load the base again"]),
    ("apply_method on a base it changed", applied_twice(on_base=True), ConfigError,
     ["model", "already carries a LORA adapter", "load the base again"]),
    ("apply_method qlora on a 16-bit base", applied(method="qlora", bits=4), ConfigError,
     ["bits", "4", "not quantised", "bits=4"]),
    ("apply_method targets it lacks", applied(lora_targets=["c_attn"]), ConfigError,
     ["lora_targets", "c_attn", "no module named ['c_attn']", "q_proj"]),
    ("apply_method BitFit without biases", applied(method="bitfit"), ConfigError,
     ["method", "'bitfit'", "no bias terms"]),
    ("apply_method top_k beyond the blocks", applied(method="top_k", top_k_layers=5), ConfigError,
     ["top_k_layers", "5", "from 1 to 2"]),
    ("apply_method adapter wider than the model", applied(method="adapter", adapter_size=1000), ConfigError,
     ["adapter_size", "1000", "from 1 to 32"]),
    ("apply_method rank changed to -1", applied(changes={"lora_r": -1}), ConfigError,
     ["lora_r", "-1", "integer from 1"]),
    ("apply_method rank changed beyond the layers", applied(changes={"lora_r": 200}), ConfigError,
     ["lora_r", "200", "at most 16"]),
    ("apply_method dropout changed to 1.5", applied(changes={"lora_dropout": 1.5}), ConfigError,
     ["lora_dropout", "1.5", "[0, 1)"]),
    ("check_setup a dict", setup_with(cfg={"method": "lora"}), ConfigError, ["cfg", "a TrainConfig"]),
    ("check_setup arch a number", setup_with(arch=42), ConfigError, ["arch", "42", "ftlab.models.Arch"]),
    ("nearest tokens of a LoRA model", nearest("lora"), ConfigError, ["model", "LORA", "prompt_tuning"]),
    ("nearest tokens of a plain model", nearest("plain"), ConfigError, ["model", "no adapter", "prompt-tuning model"]),
    ("nearest tokens k 0", nearest(k=0), ConfigError, ["k", "0", "integer from 1 to"]),
    ("nearest tokens k negative", nearest(k=-1), ConfigError, ["k", "-1", "integer from 1 to"]),
    ("nearest tokens k a string", nearest(k="3"), ConfigError, ["k", "'3'", "integer"]),
    ("nearest tokens unknown adapter", nearest(adapter="nope"), ConfigError, ["adapter", "'nope'", "['default']"]),
    ("trainable parameters of None", counted_on_model(None), ConfigError, ["model", "None", "a transformers model"]),
    # results files and run folders
    ("write_results a set", written(results={"s": {1, 2}}), ConfigError, ["results['s']", "{1, 2}", "JSON-able"]),
    ("write_results an array deep inside", written(results={"a": [{"w": np.zeros(3)}]}), ConfigError,
     ["results['a'][0]['w']", "array", ".tolist()"]),
    ("write_results a string", written(results="not a dict"), ConfigError, ["results", "'not a dict'", "a dict"]),
    ("write_results output_dir None", written(output_dir=None), ConfigError, ["output_dir", "None", "folder"]),
    ("read_results without results.json", read_back(), DataError, ["output_dir", "results.json", "does not exist"]),
    ("read_results damaged", read_back("{not json"), DataError, ["output_dir", "results.json is not valid JSON"]),
    ("run folder empty", inside_of(""), ConfigError, ["output_dir", "''", "non-empty folder name"]),
    ("run folder blank", inside_of("   "), ConfigError, ["output_dir", "'   '", "non-empty folder name"]),
    ("run folder None", inside_of(None), ConfigError, ["output_dir", "None", "non-empty folder name"]),
    ("run folder the root itself", inside_of("."), ConfigError, ["output_dir", "'.'", "not that folder itself"]),
    ("check_output_dir None", output_dir_of(None), ConfigError, ["output_dir", "None", "folder"]),
    ("check_output_dir empty", output_dir_of(""), ConfigError, ["output_dir", "''", "folder"]),
    # the panel
    ("panel of None", panel_of(None), ConfigError, ["config", "None", "a TrainConfig"]),
    ("panel of a dict", panel_of({"model": SMOL}), ConfigError, ["config", "'model'", "a TrainConfig"]),
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
    from ftlab.trained import load_trained
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


def test_the_calculator_takes_shortcuts_names_and_qlora_at_its_bits():
    from ftlab.memory import count_trainable, estimate_memory
    from ftlab.models import PRESETS
    qv = estimate_memory(SMOL, lora_targets="q,v").trainable_params
    assert qv == estimate_memory(SMOL, lora_targets=["q_proj", "v_proj"]).trainable_params
    assert qv == estimate_memory(SMOL, lora_targets="q_proj, v_proj").trainable_params  # names with commas, as before
    assert estimate_memory(SMOL, lora_targets="q").trainable_params * 2 > qv
    assert count_trainable(SMOL, "lora") == count_trainable(PRESETS[SMOL].arch, "lora") > 0
    assert count_trainable(SMOL, "inference") == 0
    # qlora without bits: 4 bits, as before; with bits=4: the same
    assert estimate_memory(SMOL, method="qlora").components == estimate_memory(SMOL, method="qlora", bits=4).components
    assert estimate_memory(SMOL, method="top_k", top_k_layers=30).trainable_params > 0
    assert estimate_memory({**_ARCH, "num_key_value_heads": 0}).total_gib > 0  # an optional 0: absent, as before


def test_check_setup_takes_an_arch_or_a_name_and_an_unknown_model_only_when_asked(tmp_path):
    from ftlab.methods import check_setup
    from ftlab.models import resolve_arch
    check_setup(_cfg(tmp_path), resolve_arch(SMOL))
    check_setup(_cfg(tmp_path), SMOL)
    with pytest.raises(ConfigError, match="at most 192"):
        check_setup(_cfg(tmp_path, lora_r=256), SMOL)
    unknown = _cfg(tmp_path, model="no-such-model")
    check_setup(unknown)  # finetune's path: skipped here, load_model says why with the whole story
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        check_setup(unknown, model_must_resolve=True)
    with pytest.raises(ModelNotFoundError, match="not cached"):
        check_setup(_cfg(tmp_path, model="someone/not-cached-xyz"), model_must_resolve=True)
    # a folder ftlab reads no numbers from (GPT-2 names them n_layer, n_embd): found, so not refused here either
    from transformers import GPT2Config
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    check_setup(_cfg(tmp_path, model=str(tmp_path / "gpt2")), model_must_resolve=True)


def test_the_panel_shows_an_unknown_model_on_its_field_and_blocks_run(tmp_path):
    from ftlab.widgets import ConfigPanel, RunControls
    panel = ConfigPanel(TrainConfig(output_dir=str(tmp_path / "runs" / "quick")))
    calls = []
    controls = RunControls(panel, lambda cfg, cb: calls.append(cfg))
    panel.fields["model"].value = "no-such-model"
    assert panel.error.field == "model" and "no-such-model" in panel.message.value, panel.message.value
    assert panel.config.model == SMOL
    assert controls.run() is None and not calls and "Fix" in controls.status.value
    panel.fields["batch_size"].value = 2  # another field changes: the model stays in error
    assert panel.error.field == "model" and panel.config.batch_size == 4
    panel.fields["model"].value = SMOL
    assert panel.error is None and panel.config.batch_size == 2 and panel.config.model == SMOL


def test_write_results_leaves_no_temporary_file_when_writing_fails(tmp_path, monkeypatch):
    import ftlab.results

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ftlab.results.json, "dump", disk_full)
    with pytest.raises(OSError):
        ftlab.results.write_results(tmp_path / "run", {"a": 1})
    assert os.listdir(tmp_path / "run") == []


def test_refused_methods_leave_the_model_as_it_was(tmp_path):
    from ftlab.methods import apply_method
    from ftlab.analysis import nearest_vocabulary_tokens
    model = _tiny()
    before = [type(m).__name__ for m in model.modules()]
    for kw in (dict(method="adapter", adapter_size=1000), dict(method="top_k", top_k_layers=5), dict(lora_r=200),
               dict(lora_targets=["q_proj", "c_attn"])):
        with pytest.raises(ConfigError):
            apply_method(model, _cfg(tmp_path, **kw))
    assert [type(m).__name__ for m in model.modules()] == before and all(p.requires_grad for p in model.parameters())
    assert hasattr(apply_method(model, _cfg(tmp_path, lora_r=16)), "peft_config")  # the same base, still usable
    rows = nearest_vocabulary_tokens(_prompt_model(tmp_path), _tok(), k=np.int64(2))
    assert len(rows) == 4 and len(rows[0]["nearest tokens"].split(" | ")) == 2


def test_bitsandbytes_repeated_cast_warning_is_said_once(caplog):
    """An 8-bit base logs bitsandbytes' 'inputs will be cast' warning at every matmul: it is shown once."""
    import logging
    from ftlab.quant import bitsandbytes_available, quantization_config
    if not bitsandbytes_available()[0]:
        pytest.skip("bitsandbytes is not usable here")
    quantization_config(8)
    quantization_config(8)  # a second 8-bit load adds no second filter
    log = logging.getLogger("bitsandbytes.autograd._functions")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            log.warning("MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.float32")
        log.warning("another message")
    said = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert said == ["MatMul8bitLt: inputs will be cast from torch.float32 to float16 during quantization",
                    "another message"]
    assert sum(type(f).__name__ == "_Once" for f in log.filters) == 1
