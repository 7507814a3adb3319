import math

import pytest

from ftlab.config import ConfigError, TrainConfig


def test_defaults_are_valid_and_roundtrip():
    cfg = TrainConfig()
    assert TrainConfig(**cfg.to_dict()) == cfg
    assert cfg.target_modules == "all-linear"
    assert TrainConfig(method="qlora", bits=4).effective_bits == 4


def test_from_params_takes_config_names_from_a_notebook_namespace():
    cfg = TrainConfig.from_params({"__name__": "__main__", "lora_r": 4, "interactive": False, "In": []})
    assert cfg.lora_r == 4


def test_from_params_refuses_a_misspelt_name_in_a_plain_dict():
    with pytest.raises(ConfigError, match=r"lora_rank=64 is not allowed: did you mean 'lora_r'\?") as e:
        TrainConfig.from_params({"lora_rank": 64})
    assert e.value.field == "lora_rank"


@pytest.mark.parametrize("field,value,allowed", [
    ("lora_r", 0, "integer from 1"),
    ("lora_r", -8, "integer from 1"),
    ("lora_r", 8.5, "integer"),
    ("lora_alpha", 0, "> 0"),
    ("lora_dropout", 1.0, "[0, 1)"),
    ("lora_targets", "qv", "one of"),
    ("lora_targets", [], "non-empty list"),
    ("num_virtual_tokens", 0, "integer from 1"),
    ("method", "lorra", "one of"),
    ("bits", 3, "one of [32, 16, 8, 4]"),
    ("max_steps", 0, "integer from 1"),
    ("batch_size", -1, "integer from 1"),
    ("seq_len", 0, "integer from 8"),
    ("learning_rate", 0.0, "> 0"),
    ("learning_rate", math.nan, "finite"),
    ("optimizer", "adam", "one of"),
    ("gradient_checkpointing", "yes", "True or False"),
    ("model", "", "non-empty"),
])
def test_bad_values_name_the_field_the_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})
    assert err.value.field == field
    assert isinstance(err.value, ValueError)
    msg = str(err.value)
    assert msg.startswith(f"{field}=") and repr(value) in msg and allowed in msg


def test_qlora_needs_4_bits():
    with pytest.raises(ConfigError, match="bits=16.*4 with method='qlora'"):
        TrainConfig(method="qlora", bits=16)
