"""ftlab.widgets.Playground on the tiny Llama with a LoRA whose weights are perturbed (so base and trained differ):
the answers are each model's own greedy generate on the same chat-templated input, streamed into the panels, with
bad input shown inline and every model left as it was."""
import copy
import threading

import pytest
import torch

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError
from ftlab.evaluation import generate
from ftlab.methods import apply_method
from ftlab.models import load_model
from ftlab.widgets import Playground

PROMPT = "Write a short subject line for this e-mail: the meeting moves to Friday at ten."


@pytest.fixture
def folder(tiny_folder, tmp_path):
    """tiny_folder's model with larger random weights: a freshly initialised one answers newlines only, which
    would make "the base answered as the base" a weak check."""
    model, tok = load_model(tiny_folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(tmp_path / "sharp")
    tok.save_pretrained(tmp_path / "sharp")
    return str(tmp_path / "sharp")


def _perturb(model, adapter: str, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f"lora_B.{adapter}." in name:
                p.normal_(0, 0.5)


@pytest.fixture
def trained(folder):
    """(peft model with a perturbed LoRA, tokenizer, the chat-templated PROMPT)."""
    model, tok = load_model(folder)
    peft_model = apply_method(model, TrainConfig(model=folder, method="lora", lora_r=4, seq_len=64))
    _perturb(peft_model, "default", 0)
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    return peft_model, tok, text


def _playground(model, tok, **kw):
    pg = Playground(model, tok, **kw)
    pg.fields["prompt"].value = PROMPT
    return pg


def _logits(model, tok, text):
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits


def test_greedy_answers_are_each_models_own_generate_on_the_same_input(trained, folder):
    model, tok, text = trained
    pg = _playground(model, tok, max_new_tokens=12)
    answers = pg.generate()
    assert pg.names == ["base", "trained"] and answers is pg.answers and not pg.failed
    base = load_model(folder)[0]  # the model before the LoRA, loaded apart
    assert answers["base"].strip() == generate(base, tok, [text], max_new_tokens=12)[0]
    assert answers["trained"].strip() == generate(model, tok, [text], max_new_tokens=12)[0]
    assert answers["base"].strip() and answers["base"] != answers["trained"]
    assert "&lt;|im_start|&gt;user" in pg.input_view.value and pg.input_view.layout.display == "none"
    pg.show_input.value = True
    assert pg.input_view.layout.display is None
    assert all(pg.texts[n] == answers[n] for n in pg.names) and "done" in pg.status.value


def test_a_second_adapter_answers_in_a_third_panel_and_the_first_is_active_again(trained):
    model, tok, text = trained
    model.add_adapter("second", copy.deepcopy(model.peft_config["default"]))
    _perturb(model, "second", 7)
    pg = _playground(model, tok, others={"second": "second"}, max_new_tokens=10)
    answers = pg.generate()
    assert pg.names == ["base", "trained", "second"] and list(pg.panels) == pg.names and not pg.failed
    assert model.active_adapter == "default"
    assert answers["trained"].strip() == generate(model, tok, [text], max_new_tokens=10)[0]
    model.set_adapter("second")
    assert answers["second"].strip() == generate(model, tok, [text], max_new_tokens=10)[0]
    assert len({answers[n] for n in pg.names}) == 3


def test_a_full_fine_tune_compares_with_base_and_a_failing_model_is_shown_in_its_panel(trained, folder):
    _, tok, text = trained
    (base, _), (full, _) = load_model(folder), load_model(folder)
    with torch.no_grad():  # a full fine-tune: every weight changed, no adapter; the base comes from base=
        full.lm_head.weight.add_(torch.randn_like(full.lm_head.weight))

    class Broken(torch.nn.Linear):
        def generate(self, **kw):
            raise RuntimeError("out of memory (made up)")

    pg = _playground(full, tok, base=base, others={"broken": Broken(2, 2)}, max_new_tokens=8)
    answers = pg.generate()
    assert pg.names == ["base", "trained", "broken"]
    assert answers["base"].strip() == generate(base, tok, [text], max_new_tokens=8)[0]
    assert answers["trained"].strip() == generate(full, tok, [text], max_new_tokens=8)[0] != answers["base"].strip()
    assert answers["broken"] is None and isinstance(pg.failed["broken"], RuntimeError)
    assert "RuntimeError" in pg.panels["broken"].value and "out of memory (made up)" in pg.panels["broken"].value
    assert "1 of 3 failed" in pg.status.value and not pg.button.disabled and not pg.busy


def test_panels_receive_the_text_as_it_is_generated(trained):
    model, tok, _ = trained
    pg = _playground(model, tok, max_new_tokens=48)
    pg.redraw_interval_s = 0
    seen = []
    pg.panels["trained"].observe(lambda change: seen.append(pg.texts["trained"]), names="value")
    answer = pg.generate()["trained"]
    partial = [t for t in seen if t and t != answer]
    assert len(set(partial)) > 1 and all(answer.startswith(t) for t in partial), seen
    pg.redraw_interval_s = 60  # throttled: "waiting", "generating", then the answer at the end
    seen.clear()
    pg.generate()
    assert len(seen) <= 4 and seen[-1] == pg.answers["trained"]


def test_bad_input_is_shown_inline_naming_the_field(trained):
    model, tok, _ = trained
    pg = Playground(model, tok, temperature=-1)
    assert set(pg.errors) == {"temperature"} and "temperature" in pg.message.value  # at once, not at Generate
    assert pg.generate() is None and set(pg.errors) == {"prompt", "temperature"} and pg.answers == {}
    pg.fields["prompt"].value = "   "
    for temperature, tokens in [("hot", "0"), ("nan", "5000"), ("-0.5", "ten"), ("", "2.5")]:
        pg.fields["temperature"].value, pg.fields["max_new_tokens"].value = temperature, tokens
        assert pg.generate() is None and set(pg.errors) == {"prompt", "temperature", "max_new_tokens"}
        assert all(f"<b>{f}</b>" in pg.message.value for f in pg.errors) and pg.answers == {}
    pg.fields["prompt"].value, pg.fields["temperature"].value, pg.fields["max_new_tokens"].value = "Hi", "0.7", "3"
    assert set(pg.generate()) == {"base", "trained"} and pg.message.value == "" and "temperature 0.7" in pg.status.value


def test_a_tokenizer_without_a_chat_template_gets_plain_text_and_a_refused_system_turn_is_named(trained):
    model, tok, _ = trained
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    pg = _playground(model, plain, max_new_tokens=4)
    pg.fields["system"].value = "Be brief."
    assert "no chat template" in pg.notice.value and set(pg.generate()) == {"base", "trained"}
    assert "im_start" not in pg.input_view.value and "Be brief.\n\n" + PROMPT in pg.input_view.value
    strict = copy.deepcopy(tok)
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role "
                            "not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    pg = _playground(model, strict, max_new_tokens=4)
    pg.fields["system"].value = "Be brief."
    assert pg.generate() is None and set(pg.errors) == {"system"} and "System role not supported" in pg.message.value


def test_wrong_arguments_raise_a_config_error_naming_them_and_examples_fill_the_fields(trained, tiny_model, tokenizer):
    model, tok, _ = trained
    for kw, field in [(dict(model=(model, tok)), "model"), (dict(others={"base": model}), "others"),
                      (dict(others={"x": "no-such-adapter"}), "others['x']"), (dict(others=[model]), "others"),
                      (dict(prompts=[{"foo": 1}]), "prompts[0]"), (dict(base="base"), "base")]:
        with pytest.raises(ConfigError) as e:
            Playground(**{"model": model, "tokenizer": tok, **kw})
        assert e.value.field == field
    records = ["plain prompt", {"source": "the meeting moves", "target": "x", "task": "summarize"},
               {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                "completion": [{"role": "assistant", "content": "A"}]}]
    pg = Playground(tiny_model, tokenizer, prompts=records)  # not a peft model: no base panel
    assert pg.names == ["trained"] and len(pg.fields["example"].options) == 4
    pg.fields["example"].value = 2
    assert (pg.fields["prompt"].value, pg.fields["system"].value) == ("U", "S")
    pg.fields["example"].value = 1
    # an example without a system prompt clears the previous example's: the models see what the example holds
    assert "the meeting moves" in pg.fields["prompt"].value and pg.fields["system"].value == ""


def test_the_model_is_left_as_it_was_after_training_and_in_eval_mode(trained):
    model, tok, text = trained
    model.train()  # as a Stop leaves it: training mode, gradient checkpointing, no cache
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()
    before = _logits(model, tok, text)
    model.train()
    pg = _playground(model, tok, max_new_tokens=6)
    first = pg.generate()
    assert model.training and {n: p.requires_grad for n, p in model.named_parameters()} == flags
    model.eval()
    assert torch.equal(_logits(model, tok, text), before)  # the adapter is on again
    for p in model.parameters():  # loaded for inference: nothing trainable, and so it stays
        p.requires_grad_(False)
    with torch.no_grad():
        assert pg.generate() == first
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_the_button_is_disabled_while_generating_and_a_second_click_does_nothing(trained):
    model, tok, _ = trained
    pg = _playground(model, tok, max_new_tokens=6)
    release = threading.Event()
    pg.panels["base"].observe(lambda change: threading.current_thread() is pg.thread and release.wait(60),
                              names="value")
    thread = pg.generate(background=True)
    assert isinstance(thread, threading.Thread) and pg.thread is thread
    assert pg.button.disabled and pg.busy
    pg.button.click()
    assert pg.generate(background=True) is None and pg.generate() is None and pg.thread is thread
    release.set()
    thread.join(120)
    assert not thread.is_alive() and not pg.button.disabled and not pg.busy
    assert set(pg.answers) == {"base", "trained"} and all(isinstance(a, str) for a in pg.answers.values())


def test_an_example_without_a_system_prompt_clears_the_previous_ones(trained):
    model, tok, _ = trained
    with_system = {"prompt": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "q1"}]}
    pg = Playground(model, tok, prompts=[with_system, "q2"])
    pg.fields["example"].value = 0
    assert pg.fields["system"].value == "Answer in French."
    pg.fields["example"].value = 1
    assert pg.fields["system"].value == "" and pg.fields["prompt"].value == "q2"
    with pytest.raises(ConfigError) as e:
        Playground(model, tok, prompts=5)
    assert e.value.field == "prompts"
