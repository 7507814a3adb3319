import json

import pytest

from ftlab.models import PRESETS, ModelNotFoundError, load_model, resolve_arch


def test_presets_cover_the_course_models():
    for name in ["smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct", "qwen2.5-0.5b-instruct",
                 "qwen2.5-1.5b-instruct", "qwen2.5-7b-instruct", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b",
                 "llama-3.1-8b-instruct", "meta-llama-3-8b", "mistral-7b-instruct-v0.3", "gemma-3-270m",
                 "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-70b", "mixtral-8x7b"]:
        assert name in PRESETS


@pytest.mark.parametrize("name,billions", [
    # published parameter counts
    ("smollm2-135m-instruct", 0.1345), ("qwen2.5-0.5b-instruct", 0.494), ("llama-3.2-1b", 1.236),
    ("llama-3.1-8b", 8.030), ("llama-2-7b", 6.738), ("llama-2-70b", 68.98), ("llama-3.1-70b", 70.55), ("mistral-7b-instruct-v0.3", 7.248),
    ("mixtral-8x7b", 46.70), ("gemma-3-270m", 0.268),
])
def test_architecture_numbers_give_the_published_parameter_counts(name, billions):
    assert PRESETS[name].arch.n_params / 1e9 == pytest.approx(billions, rel=0.005)


def test_embedded_model_loads_offline_and_answers(tokenizer):
    model, tok = load_model("smollm2-135m-instruct")
    assert model.num_parameters() == 134_515_008
    assert model.ftlab_info["device"] == "cpu" and model.ftlab_info["dtype"] == "float32"
    assert resolve_arch(model.config) == PRESETS["smollm2-135m-instruct"].arch
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:])


def test_local_folder_loads(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path))
    assert model.num_parameters() == tiny_model.num_parameters()
    assert resolve_arch(str(tmp_path)).layers == 2


def test_unknown_name_lists_the_presets():
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        load_model("gpt-9000")


def test_hub_id_offline_says_not_cached_and_unreachable():
    with pytest.raises(ModelNotFoundError, match="not cached and the hub is unreachable"):
        load_model("someone/not-a-cached-model")


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_bits_4_without_bitsandbytes_is_a_clear_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_bnb(name, *a, **kw):
        if name.startswith("bitsandbytes"):
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ValueError, match="bits=4 needs bitsandbytes.*bits=16"):
        load_model("smollm2-135m-instruct", bits=4)


def test_arch_missing_a_number_names_it():
    with pytest.raises(ValueError, match="intermediate_size"):
        resolve_arch({"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10})


def test_arch_from_local_config_json(tmp_path):
    cfg = {"num_hidden_layers": 24, "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "model_type": "qwen2",
           "max_position_embeddings": 32768}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert resolve_arch(str(tmp_path)) == PRESETS["qwen2.5-0.5b-instruct"].arch
