"""Every row of the method table: it trains 2 steps on a tiny model, only its own parameters change,
its trainable count matches the calculator's, and what it trained saves (safetensors) and reloads."""
import re

import pytest
import torch

from ftlab.config import TrainConfig
from ftlab.data import load_records, to_prompt_completion
from ftlab.memory import count_trainable
from ftlab.methods import METHODS, apply_method, trainable_parameters
from ftlab.trained import load_trained
from ftlab.train import finetune

# what each method may change (parameter names as the wrapped model names them): its row's pattern; top_k, on
# the 3-layer model with top_k_layers=1, the last block only
OWN = {**{m: row.trains for m, row in METHODS.items()}, "lora8": METHODS["lora"].trains, "top_k": r"layers\.2\."}
CASES = [m for m in METHODS] + ["lora8"]


def _tiny(tokenizer, method, folder):
    """A 3-layer random model with the real tokenizer; Qwen2 (biases on q, k, v) for BitFit. 4/8-bit bases
    are loaded through load_model from a saved folder, as a real model would be."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from ftlab.models import load_model, tiny_test_model
    torch.manual_seed(0)
    if method == "bitfit":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                             tie_word_embeddings=True))
    else:
        model = tiny_test_model(tokenizer, layers=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    bits = {"qlora": 4, "lora8": 8}.get(method, 32)
    return load_model(str(folder), bits=bits, device="cpu")[0], bits


@pytest.mark.parametrize("case", CASES)
def test_method_trains_only_its_parameters_and_reloads(case, tokenizer, tmp_path):
    method = "lora" if case == "lora8" else case
    base, bits = _tiny(tokenizer, case, tmp_path / "base")
    cfg = TrainConfig(method=method, bits=bits, lora_r=2, num_virtual_tokens=4, adapter_size=8, top_k_layers=1,
                      max_steps=2, batch_size=2, seq_len=64, learning_rate=1e-2, output_dir=str(tmp_path / "run"))
    model = apply_method(base, cfg)
    n_train, n_total = trainable_parameters(model)
    assert n_train == count_trainable(base.config, cfg)
    assert 0 < n_train <= n_total
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = to_prompt_completion(load_records("definitions", "train", n=4))
    result, model = finetune(cfg, data, model=model, tokenizer=tokenizer, eval_before=False, apply=False)
    assert result.steps == 2 and len(result.losses) == 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, f"{case}: nothing was trained"
    stray = [n for n in changed if not re.search(OWN[case], n)]
    assert not stray, f"{case}: parameters outside the method changed: {stray[:5]}"
    folder = tmp_path / "run" / "adapter"
    assert result.saved_to == str(folder)
    files = {p.name for p in folder.iterdir()}
    assert any(f.endswith(".safetensors") for f in files) and not any(f.endswith((".bin", ".pt")) for f in files)
    fresh, _ = _tiny(tokenizer, case, tmp_path / "base2")
    reloaded = load_trained(fresh, folder)
    ids = torch.tensor([tokenizer("A dictionary defines words.")["input_ids"]])
    model.eval(), reloaded.eval()
    # 4/8-bit bases: TRL's SFTTrainer casts the adapters of a quantised model to bf16 (QLoRA's recipe), peft
    # reloads them in fp32: the same values, computed at two precisions (seen: ≤ 2.2e-3 on these logits, 0.0
    # once the trained adapters are cast back to fp32); 16/32-bit reloads are exact to float tolerance
    tol = dict(atol=5e-3, rtol=0) if bits in (4, 8) else {}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, **tol)


@pytest.mark.parametrize("case", CASES)
def test_methods_that_start_as_the_base_compute_what_it_computes(case, tokenizer, tmp_path):
    """Method.starts_as_base lets a comparison score the base once for all such methods: check it is true
    (logits equal before any step) and false for the others (soft prompts and adapters change the output)."""
    method = "lora" if case == "lora8" else case
    base, bits = _tiny(tokenizer, case, tmp_path / "base")
    ids = torch.tensor([tokenizer("A dictionary defines words.")["input_ids"]])
    cfg = TrainConfig(method=method, bits=bits, lora_r=2, num_virtual_tokens=4, adapter_size=8, top_k_layers=1)
    with torch.no_grad():
        ref = base(input_ids=ids).logits
        out = apply_method(base, cfg).eval()(input_ids=ids).logits[:, -ids.shape[1]:]
    if METHODS[method].starts_as_base:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    else:
        assert (out - ref).abs().max() > 1e-4


def test_houlsby_adapter_starts_near_identity(tiny_model):
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        ref = tiny_model(input_ids=ids).logits
        model = apply_method(tiny_model, TrainConfig(method="adapter", adapter_size=8))
        out = model(input_ids=ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert sum(1 for n, _ in model.named_modules() if n.endswith(".adapter")) == 2 * 2  # 2 blocks × (attn, mlp)


def test_prompt_tuning_can_start_from_text(tiny_model, tokenizer, tmp_path):
    """Text initialisation (Lester et al., 2021): the virtual tokens start as the embeddings of a real prompt."""
    from ftlab.models import embedded_folder
    tiny_model.name_or_path = str(embedded_folder("smollm2-135m-instruct"))  # where peft finds the tokenizer
    text = "Define the word:"
    ids = tokenizer(text)["input_ids"]
    cfg = TrainConfig(method="prompt_tuning", num_virtual_tokens=len(ids), prompt_init_text=text,
                      output_dir=str(tmp_path))
    model = apply_method(tiny_model, cfg)
    learned = model.prompt_encoder["default"].embedding.weight
    expected = tiny_model.get_input_embeddings().weight[torch.tensor(ids)]
    torch.testing.assert_close(learned, expected)


def test_comparison_scores_a_shared_base_once(tiny_model, tokenizer, tmp_path):
    """compare_methods: methods that start as the base share the first one's validation pass before training
    (the same number it would compute itself); the others compute their own."""
    from ftlab.compare import compare_methods, variant
    from ftlab.runs import run_and_measure
    from ftlab.data import sft_data
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = TrainConfig(model=str(folder), dataset="definitions", max_steps=2, batch_size=2, seq_len=128, lora_r=2,
                      num_virtual_tokens=4, output_dir=str(tmp_path / "cmp"))
    train, val = sft_data(cfg, tokenizer, n_validation=2)
    rows = {r["method"]: r for r in compare_methods(cfg, ["lora", "ia3", "prompt_tuning"], train, val, [],
                                                   max_new_tokens=4)}
    assert "val_before_from" not in rows["lora"] and rows["ia3"]["val_before_from"] == "lora"
    assert rows["ia3"]["val_loss_before"] == rows["lora"]["val_loss_before"]
    assert "val_before_from" not in rows["prompt_tuning"]
    assert rows["prompt_tuning"]["val_loss_before"] != rows["lora"]["val_loss_before"]
    own = run_and_measure(variant("ia3", cfg), train, val)  # what ia3 scores before training on its own
    assert own["val_loss_before"] == pytest.approx(rows["ia3"]["val_loss_before"], rel=1e-5)


def test_nearest_vocabulary_tokens_finds_the_tokens_a_prompt_was_set_to(tiny_model, tokenizer, tmp_path):
    import torch
    from ftlab.analysis import nearest_vocabulary_tokens
    model = apply_method(tiny_model, TrainConfig(method="prompt_tuning", num_virtual_tokens=4, output_dir=str(tmp_path)))
    ids = tokenizer(" define the word", add_special_tokens=False)["input_ids"][:4]
    emb = model.get_input_embeddings().weight
    with torch.no_grad():  # virtual tokens placed exactly on real tokens' embeddings, one scaled (cosine ignores it)
        model.prompt_encoder["default"].embedding.weight[:len(ids)] = emb[ids] * torch.tensor([[1.0]] * (len(ids) - 1) + [[3.0]])
    rows = nearest_vocabulary_tokens(model, tokenizer, k=2)
    assert [r["virtual token"] for r in rows] == list(range(4))
    for r, i in zip(rows, ids):
        assert r["nearest tokens"].split(" | ")[0] == repr(tokenizer.decode([i])) and abs(r["cosine"] - 1) < 1e-5


def test_qlora_gradient_survives_an_evaluation(tokenizer, tmp_path):
    """An evaluation (eval mode, no grad) must not change QLoRA's gradients: on an AVX512-BF16 CPU bitsandbytes
    repacks 4-bit weights for an inference kernel without backward, which cut the gradient through the base."""
    base, bits = _tiny(tokenizer, "qlora", tmp_path / "base")
    cfg = TrainConfig(method="qlora", bits=4, lora_r=2, output_dir=str(tmp_path / "run"))
    torch.manual_seed(0)
    model = apply_method(base, cfg)
    with torch.no_grad():  # B starts at 0, which would leave every A without gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids = tokenizer(["A lexicon lists the words of a language."], return_tensors="pt")["input_ids"]

    def grads():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    before = grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    assert torch.allclose(grads(), before, rtol=1e-4, atol=1e-7)


def test_register_method_adds_a_method_every_part_uses(tokenizer, monkeypatch):
    """A method peft has and ftlab lacks (VeRA: frozen shared random A, B; trained scaling vectors), added with one
    register_method call and nothing else: the config takes it, the calculator estimates it and counts what it
    trains, apply_method puts it on a model, and the count equals what the wrapped model reports."""
    import peft

    from ftlab import shapes
    from ftlab.memory import estimate_memory
    from ftlab.method_table import Method, register_method
    from ftlab.models import tiny_test_model

    def count_vera(arch, s):  # a scale per output feature and one per rank, on each targeted layer
        return arch.layers * sum(s.lora_r + arch.linear_shapes()[m][1] for m in s.mods)

    monkeypatch.setitem(METHODS, "probe_vera", None)  # the row goes again when the test ends
    del METHODS["probe_vera"]
    row = register_method(Method(
        "probe_vera", "reparameterisation", "shared random A and B, trained scaling vectors", count_vera,
        shapes.saved_lora, r"vera_lambda", fits_arch=shapes.fit_low_rank, low_rank=True, peft_type="VERA",
        knobs=("lora_r", "lora_targets"),
        peft_config=lambda cfg, model: peft.VeraConfig(r=cfg.lora_r, target_modules=cfg.target_modules,
                                                       task_type="CAUSAL_LM")))
    assert METHODS["probe_vera"] is row
    with pytest.raises(ValueError, match="a new name"):
        register_method(row)
    cfg = TrainConfig(method="probe_vera", lora_r=4, lora_targets="q,v", bits=32)
    assert estimate_memory(cfg).trainable_params == count_trainable(cfg) > 0
    torch.manual_seed(0)
    base = tiny_test_model(tokenizer)
    model = apply_method(base, cfg)
    assert trainable_parameters(model)[0] == count_trainable(base.config, cfg)
    assert all(re.search(row.trains, n) for n, p in model.named_parameters() if p.requires_grad)
