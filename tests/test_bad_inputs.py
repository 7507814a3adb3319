"""A table of bad inputs across the config, the calculator, the data files and records, training's entry and
the widget panel. Each must be answered by the precise ValueError subclass of ftlab.errors whose message
names the field, shows the bad value and says what is allowed; in the panel, by an inline message and no
traceback. The other entry points have their own tables (test_bad_inputs_eval.py, test_bad_inputs_models.py);
together they hold at least 150 cases (asserted in test_bad_input_tables_together)."""
import os

import pytest

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError, DataError, FtlabError, ModelNotFoundError, RunStateError

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


def data_path(content: bytes, name: str = "mine.jsonl", split: str = "train"):
    def f(tmp):
        from ftlab.data import load_records
        path = tmp / name
        path.write_bytes(content)
        return load_records(str(path), split)
    return f


def records(name, split="train", **kw):
    from ftlab.data import load_records
    return lambda tmp: load_records(name, split, **kw)


def sums(split="train", **kw):
    from ftlab.catalog import arithmetic_records
    return lambda tmp: arithmetic_records(split, **kw)


def sft(train, eval_records=None):
    """train_sft's checks on records happen before the model or tokenizer is touched."""
    def f(tmp):
        from ftlab.train import train_sft
        return train_sft(None, None, train, TrainConfig(output_dir=str(tmp / "run")), eval_records=eval_records)
    return f


def prompts(recs):
    from ftlab.data import to_prompt_completion
    return lambda tmp: to_prompt_completion(recs)


def from_params(params):
    return lambda tmp: TrainConfig.from_params(params)


def largest(which, **kw):
    from ftlab import memory
    return lambda tmp: getattr(memory, which)(kw.pop("model", SMOL), kw.pop("gpu", "T4"), **kw)


def estimate_of(model, **kw):
    from ftlab.memory import estimate_memory
    return lambda tmp: estimate_memory(model, **kw)


def bert_config(tmp):
    from transformers import BertConfig
    from ftlab.memory import estimate_memory
    return estimate_memory(BertConfig())


def bert_folder(tmp):
    from transformers import BertConfig
    from ftlab.memory import estimate_memory
    BertConfig().save_pretrained(tmp / "bert")
    return estimate_memory(str(tmp / "bert"))


PC = {"prompt": "2+2?", "completion": "4"}


def run_with(records=None, cfg_changes=None, **kw):
    """finetune's checks, all before the base model would load (no model is given, so a miss would load one)."""
    def f(tmp):
        from ftlab.train import finetune
        c = TrainConfig(output_dir=str(tmp / "run"))
        for k, v in (cfg_changes or {}).items():
            setattr(c, k, v)
        return finetune(kw.pop("cfg", c), [PC] if records is None else records, **kw)
    return f


def mutated_sft(**changes):
    def f(tmp):
        from ftlab.train import train_sft
        c = TrainConfig(output_dir=str(tmp / "run"))
        for k, v in changes.items():
            setattr(c, k, v)
        return train_sft(None, None, [PC], c)
    return f


def run_call(action):
    def f(tmp):
        from ftlab.runner import Run
        return action(Run)
    return f


def started_twice(Run):
    run = Run(lambda cb: None).start(background=False)
    return run.start(background=False)


def estimate(**kw):
    from ftlab.memory import estimate_memory
    return lambda tmp: estimate_memory(SMOL, **kw)


def escape(name):
    from ftlab.results import inside
    return lambda tmp: inside(tmp / "runs", name)


# (id, call, words the message must contain: the field, the bad value, and what is allowed[, error class: by
# default any of ftlab.errors, never a bare ValueError from inside a library])
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
    # --- config: types, numpy, strings that look like booleans, misspelt names -------------------------------
    ("checkpointing as the string 'False'", cfg(gradient_checkpointing="False"),
     ["gradient_checkpointing", "'False'", "True or False"], ConfigError),
    ("double quantisation as 1", cfg(double_quant=1), ["double_quant", "1", "True or False"], ConfigError),
    ("remote code as 'yes'", cfg(trust_remote_code="yes"), ["trust_remote_code", "'yes'", "True or False"], ConfigError),
    ("rank as True", cfg(lora_r=True), ["lora_r", "True", "integer"], ConfigError),
    ("rank as a numpy float", cfg(lora_r=__import__("numpy").float64(8.0)), ["lora_r", "8.0", "integer"], ConfigError),
    ("rank as a numpy integer too large", cfg(lora_r=__import__("numpy").int64(5000)),
     ["lora_r", "5000", "an integer from 1 to 4096"], ConfigError),
    ("bits as a float", cfg(bits=8.0), ["bits", "8.0", "[32, 16, 8, 4]"], ConfigError),
    ("bits as a string", cfg(bits="4"), ["bits", "'4'", "[32, 16, 8, 4]"], ConfigError),
    ("alpha infinite", cfg(lora_alpha=float("inf")), ["lora_alpha", "inf", "finite"], ConfigError),
    ("alpha a string", cfg(lora_alpha="16"), ["lora_alpha", "'16'", "number"], ConfigError),
    ("learning rate above 1", cfg(learning_rate=3.0), ["learning_rate", "3.0", "≤ 1"], ConfigError),
    ("learning rate a string", cfg(learning_rate="1e-4"), ["learning_rate", "'1e-4'", "number"], ConfigError),
    ("dropout NaN", cfg(lora_dropout=float("nan")), ["lora_dropout", "nan", "[0, 1)"], ConfigError),
    ("targets a bare module name", cfg(lora_targets="q_proj"), ["lora_targets", "'q_proj'", "list of module names"],
     ConfigError),
    ("targets with a number", cfg(lora_targets=["q_proj", 3]), ["lora_targets", "item 1", "strings"], ConfigError),
    ("targets repeated", cfg(lora_targets=["q_proj", "q_proj"]), ["lora_targets", "distinct"], ConfigError),
    ("targets a dict", cfg(lora_targets={"q_proj": 1}), ["lora_targets", "q_proj", "list of strings"], ConfigError),
    ("seed negative", cfg(seed=-1), ["seed", "-1", "integer from 0"], ConfigError),
    ("seed a float", cfg(seed=1.5), ["seed", "1.5", "integer"], ConfigError),
    ("eval examples negative", cfg(eval_examples=-1), ["eval_examples", "-1", "integer from 0"], ConfigError),
    ("model empty", cfg(model=" "), ["model", "' '", "non-empty string"], ConfigError),
    ("model None", cfg(model=None), ["model", "None", "non-empty string"], ConfigError),
    ("dataset a list", cfg(dataset=["a.jsonl"]), ["dataset", "['a.jsonl']", "string"], ConfigError),
    ("output folder a number", cfg(output_dir=3), ["output_dir", "3", "string"], ConfigError),
    ("method None", cfg(method=None), ["method", "None", "'lora'"], ConfigError),
    ("method in capitals", cfg(method="LoRA"), ["method", "'LoRA'", "'lora'"], ConfigError),
    ("virtual tokens above 1024", cfg(method="prompt_tuning", num_virtual_tokens=5000),
     ["num_virtual_tokens", "5000", "to 1024"], ConfigError),
    ("prompt init text a number", cfg(prompt_init_text=5), ["prompt_init_text", "5", "string"], ConfigError),
    ("top-k on a 8-bit base", cfg(method="top_k", bits=8), ["bits", "8", "16 or 32"], ConfigError),
    ("BitFit on a 4-bit base", cfg(method="bitfit", bits=4), ["bits", "4", "16 or 32"], ConfigError),
    ("prefix tuning with checkpointing", cfg(method="prefix_tuning", gradient_checkpointing=True),
     ["gradient_checkpointing", "True", "False with method='prefix_tuning'"], ConfigError),
    ("sequence longer than positions with virtual tokens", setup(method="prompt_tuning", num_virtual_tokens=20,
                                                                seq_len=8180), ["seq_len", "8180", "at most 8172"],
     ConfigError),
    ("a misspelt parameter", from_params({"lora_rank": 64}), ["lora_rank", "64", "did you mean 'lora_r'"], ConfigError),
    ("a misspelt rate", from_params({"learning_rat": 1e-4}), ["learning_rat", "did you mean 'learning_rate'"],
     ConfigError),
    ("parameters as a list", from_params([("lora_r", 8)]), ["params", "a dict"], ConfigError),
    # --- the calculator -----------------------------------------------------------------------------------------
    ("calculator: checkpointing as a string", estimate(gradient_checkpointing="False"),
     ["gradient_checkpointing", "'False'", "True or False"], ConfigError),
    ("calculator: unknown method", estimate(method="lorax"), ["method", "'lorax'", "'lora'"], ConfigError),
    ("calculator: bits 2", estimate(bits=2), ["bits", "2", "[32, 16, 8, 4]"], ConfigError),
    ("calculator: rank a float", estimate(lora_r=8.5), ["lora_r", "8.5", "integer"], ConfigError),
    ("calculator: sequence of 0", estimate(seq_len=0), ["seq_len", "0", "≥ 1"], ConfigError),
    ("calculator: unknown optimizer", estimate(optimizer="lion"), ["optimizer", "'lion'", "'adamw'"], ConfigError),
    ("calculator: unknown trainer", estimate(trainer="accelerate"), ["trainer", "'accelerate'", "'trl'"], ConfigError),
    ("calculator: targets it lacks", estimate(lora_targets=["c_attn"]), ["lora_targets", "c_attn", "q_proj"],
     ConfigError),
    ("calculator: targets a bare string list", estimate(lora_targets=[1, 2]), ["lora_targets", "item 0", "strings"],
     ConfigError),
    ("calculator: full at 4 bits", estimate(method="full", bits=4), ["bits", "4", "16 or 32"], ConfigError),
    ("calculator: longer than positions", estimate(seq_len=100_000), ["seq_len", "100000", "at most 8192"],
     ConfigError),
    ("calculator: model None", estimate_of(None), ["model", "None", "preset name"], ConfigError),
    ("calculator: model empty", estimate_of(""), ["model", "''", "non-empty"], ConfigError),
    ("calculator: unknown model", estimate_of("no-such-model"), ["model=", "'no-such-model'", "Presets"],
     ModelNotFoundError),
    ("calculator: an encoder's config", bert_config, ["model", "'bert'", "decoder-only", "encoder"], ConfigError),
    ("calculator: an encoder's folder", bert_folder, ["model", "'bert'", "decoder-only"], ConfigError),
    ("largest batch: unknown model", largest("max_batch_size", model="no-such-model"), ["model=", "no-such-model"],
     ModelNotFoundError),
    ("largest batch: unknown method", largest("max_batch_size", method="lorax"), ["method", "'lorax'", "'lora'"],
     ConfigError),
    ("largest batch: unknown GPU", largest("max_batch_size", gpu="V100"), ["gpu", "'V100'", "'T4'"], ConfigError),
    ("largest batch: an impossible length", largest("max_batch_size", seq_len=100_000),
     ["seq_len", "100000", "at most 8192"], ConfigError),
    ("largest batch: batch given too", largest("max_batch_size", batch_size=4), ["batch_size", "4", "searches"],
     ConfigError),
    ("longest sequence: unknown method", largest("max_seq_len", method="lorax"), ["method", "'lorax'"], ConfigError),
    # --- a user's data files --------------------------------------------------------------------------------------
    ("JSONL a list on a line", data_file(b'["2+2?", "4"]\n'), ["mine.jsonl:1", "JSON object", "list"], DataError),
    ("JSONL a number as completion", data_file(b'{"prompt": "2+2?", "completion": 4}\n'),
     ["mine.jsonl:1", "'completion'", "must be a string", "int 4"], DataError),
    ("JSONL a null completion", data_file(b'{"prompt": "2+2?", "completion": null}\n'),
     ["mine.jsonl:1", "'completion'", "must be a string", "None"], DataError),
    ("JSONL other keys", data_file(b'{"question": "2+2?", "answer": "4"}\n'),
     ["mine.jsonl:1", "'prompt'", "required fields", "['answer', 'question']"], DataError),
    ("JSONL preference pairs", data_file(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'),
     ["mine.jsonl:1", "'completion'", "required fields"], DataError),
    ("JSONL one record only", data_file(b'{"prompt": "2+2?", "completion": "4"}\n'),
     ["mine.jsonl", "1 record", "at least 2"], DataError),
    ("JSONL split values unknown", data_file(b'{"prompt": "a", "completion": "b", "split": "dev"}\n'),
     ["mine.jsonl", "['dev']", "'validation'"], DataError),
    ("JSONL split on some records only",
     data_file(b'{"prompt": "a", "completion": "b", "split": "train"}\n{"prompt": "a", "completion": "b"}\n'),
     ["mine.jsonl", "'split'", "all or none"], DataError),
    ("JSON an object, not a list", data_path(b'{"prompt": "a", "completion": "b"}', "mine.json"),
     ["mine.json", "JSON array", "['completion', 'prompt']"], DataError),
    ("JSON a list of strings", data_path(b'["a", "b"]', "mine.json"), ["mine.json record 0", "JSON object", "str"],
     DataError),
    ("JSON malformed", data_path(b'[{"prompt": "a",', "mine.json"), ["mine.json", "malformed JSON"], DataError),
    ("JSON empty list", data_path(b'[]', "mine.json"), ["mine.json", "empty"], DataError),
    ("CSV file", data_path(b'prompt,completion\na,b\n', "mine.csv"), ["dataset=", "mine.csv", ".jsonl", ".json"],
     DataError),
    ("a folder as dataset", lambda tmp: records(str(tmp))(tmp), ["dataset=", "folder", ".jsonl"], DataError),
    ("a .jsonl that does not exist", records("/nonexistent/mine.jsonl"), ["dataset=", "no such file"], DataError),
    ("dataset empty string", records(""), ["dataset", "''", "non-empty"], DataError),
    ("dataset None", records(None), ["dataset", "None", "string"], DataError),
    ("unknown split", records("definitions", "dev"), ["split", "'dev'", "'validation'"], DataError),
    ("n = 0", records("definitions", n=0), ["n", "0", "integer ≥ 1"], DataError),
    ("n a float", records("definitions", n=2.5), ["n", "2.5", "integer"], DataError),
    ("seed negative (data)", records("definitions", seed=-3), ["seed", "-3", "integer ≥ 0"], DataError),
    ("sums' max_value under 10", sums(max_value=9), ["max_value", "9", "integer ≥ 10"], DataError),
    ("sums' max_value a string", sums(max_value="30"), ["max_value", "'30'", "integer"], DataError),
    ("sums' max_value too small for n", sums(max_value=12),
     ["max_value=12", "only 309 different sums", "raise max_value"], DataError),
    ("sums' unknown split", sums("dev"), ["split", "'dev'", "'validation'"], DataError),
    # --- records handed to training ---------------------------------------------------------------------------
    ("training records a dict", sft(PC), ["train_records", "dict", "a list of records", "put it in a list"], DataError),
    ("training records a string", sft("2+2? 4"), ["train_records", "str", "a list of records"], DataError),
    ("training record a string", sft(["2+2? 4"]), ["train_records[0]", "str", "a dict"], DataError),
    ("training record other keys", sft([{"question": "a", "answer": "b"}]),
     ["train_records[0]", "['answer', 'question']", "'prompt' and 'completion'"], DataError),
    ("training record a null completion", sft([{"prompt": "a", "completion": None}]),
     ["train_records[0]['completion']", "None", "non-empty string"], DataError),
    ("training record a number", sft([{"prompt": 4, "completion": "b"}]), ["train_records[0]['prompt']", "int 4"],
     DataError),
    ("training record no completion", sft([{"prompt": "a"}]), ["train_records[0]['completion']", "missing"], DataError),
    ("training record an empty completion", sft([PC, {"prompt": "a", "completion": ""}]),
     ["train_records[1]['completion']", "empty"], DataError),
    ("training record a preference pair", sft([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
     ["train_records[0]", "preference pair", "train_dpo"], DataError),
    ("training record a bad message", sft([{"prompt": [{"role": "user"}], "completion": [{"role": "assistant",
                                                                                            "content": "b"}]}]),
     ["train_records[0]['prompt'][0]", "'role': str, 'content': str"], DataError),
    ("training record mixed kinds", sft([{"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}]),
     ["train_records[0]", "must both be strings or both message lists"], DataError),
    ("training messages a string", sft([{"messages": "hi"}]), ["train_records[0]['messages']", "list of messages"],
     DataError),
    ("held-out record a string", sft([PC], ["x"]), ["eval_records[0]", "str", "a dict"], DataError),
    ("task records without a target", prompts([{"source": "a"}]), ["records[0]['target']", "missing"], DataError),
    ("task records given prompt/completion", prompts([PC]), ["records[0]['source']", "missing", "load_records"],
     DataError),
    # --- finetune / train_sft: everything checked before the base loads ------------------------------------------
    ("finetune: a dict as cfg", run_with(cfg={"method": "lora"}), ["cfg", "'method': 'lora'", "a TrainConfig"],
     ConfigError),
    ("finetune: a strategy name as layout", run_with(layout="zero3"), ["layout", "'zero3'", "ftlab.layout.Layout"],
     ConfigError),
    ("finetune: task records, not prompt/completion", run_with(records=[{"source": "a", "target": "b"}]),
     ["train_records[0]", "['source', 'target']", "'prompt' and 'completion'"], DataError),
    ("finetune: rank changed to -1 after creation", run_with(cfg_changes={"lora_r": -1}),
     ["lora_r", "-1", "integer from 1"], ConfigError),
    ("finetune: method changed to an unknown one", run_with(cfg_changes={"method": "lorax"}),
     ["method", "'lorax'", "'lora'"], ConfigError),
    ("finetune: steps changed to 0", run_with(cfg_changes={"max_steps": 0}), ["max_steps", "0", "integer from 1"],
     ConfigError),
    ("finetune: sequence length changed to a string", run_with(cfg_changes={"seq_len": "64"}),
     ["seq_len", "'64'", "integer"], ConfigError),
    ("finetune: a misspelt SFTConfig override", run_with(completion_only_los=False),
     ["completion_only_los", "did you mean 'completion_only_loss'", "SFTConfig"], ConfigError),
    ("finetune: listeners a string", run_with(listeners="plot"), ["listeners", "'plot'", "list of functions"],
     ConfigError),
    ("finetune: eval_steps -1", run_with(eval_steps=-1), ["eval_steps", "-1", "integer ≥ 1"], ConfigError),
    ("finetune: model and tokenizer as a tuple", run_with(model=(1, 2)), ["model", "tuple", "the model alone"],
     ConfigError),
    ("finetune: model not a model", run_with(model="smollm2-135m-instruct"), ["model", "'str'", "transformers model"],
     ConfigError),
    ("train_sft: a dict as cfg", lambda tmp: __import__("ftlab.train").train.train_sft(None, None, [PC], {}),
     ["cfg", "{}", "a TrainConfig"], ConfigError),
    ("train_sft: dropout changed to 1.5", mutated_sft(lora_dropout=1.5), ["lora_dropout", "1.5", "[0, 1)"],
     ConfigError),
    ("Run: target not callable", run_call(lambda Run: Run(None)), ["target", "None", "a function"], ConfigError),
    ("Run: listeners a string", run_call(lambda Run: Run(lambda cb: None, listeners="ab")),
     ["listeners", "'ab'", "list of functions"], ConfigError),
    ("Run: wait before start", run_call(lambda Run: Run(lambda cb: None).wait(0.1)),
     ["not been started", "run.start()"], RunStateError),
    ("Run: stop before start", run_call(lambda Run: Run(lambda cb: None).stop()),
     ["nothing to stop", "run.start()"], RunStateError),
    ("Run: started twice", run_call(started_twice), ["started already", "new Run"], RunStateError),
    ("task records given pairs", prompts([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
     ["records[0]", "preference pair", "train_dpo"], DataError),
]


def test_bad_input_tables_together():
    import test_bad_inputs_eval
    import test_bad_inputs_models
    assert len(CASES) >= 100
    assert len(CASES) + len(test_bad_inputs_eval.CASES) + len(test_bad_inputs_models.CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_value_error(case, tmp_path):
    name, call, words = case[:3]
    expected = case[3] if len(case) > 3 else FtlabError
    with pytest.raises(ValueError) as info:
        call(tmp_path)
    assert isinstance(info.value, expected), f"{name}: {type(info.value).__name__}, not {expected.__name__}"
    msg = str(info.value)
    missing = [w for w in words if w not in msg]
    assert not missing, f"{name}: message lacks {missing}: {msg}"
    assert "Traceback" not in msg


# The same mistakes typed into the panel: an inline message naming the field; the config stays valid.
PANEL = [
    ("lora_alpha", 0.0), ("lora_alpha", -1.0), ("batch_size", 0), ("max_steps", -1), ("seq_len", 0),
    ("learning_rate", 0.0), ("learning_rate", float("nan")), ("num_virtual_tokens", 0), ("adapter_size", 0),
    ("top_k_layers", 0), ("lora_targets", "c_attn"), ("lora_r", 256), ("output_dir", "../../etc"),
    ("output_dir", "/etc"), ("output_dir", ""), ("output_dir", "."), ("output_dir", "   "), ("model", "no-such-model"),
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


def test_paths_are_accepted_where_a_path_is_meant(tmp_path):
    from pathlib import Path
    cfg = TrainConfig(model=Path("smollm2-135m-instruct"), dataset=Path("definitions"), output_dir=tmp_path / "run")
    assert (cfg.model, cfg.dataset, cfg.output_dir) == ("smollm2-135m-instruct", "definitions", str(tmp_path / "run"))
    import json
    json.dumps(cfg.to_dict())  # saved with every run: must stay JSON
