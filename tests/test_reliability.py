"""Faults injected into real (tiny) training runs: out of memory, a non-finite loss, Stop and resume,
KeyboardInterrupt, a save killed half-way. Each must end with a clear message, the last good weights
saved, and a process that goes on working."""
import json
import math
import os

import pytest
import torch

from ftlab.config import TrainConfig
from ftlab.data import load_records, to_prompt_completion
from ftlab.checkpoints import checkpoint_for, save_checkpoint
from ftlab.guard import NonFiniteLoss, OutOfMemory
from ftlab.methods import apply_method
from ftlab.trained import load_trained
from ftlab.report import ReportCallback
from ftlab.train import finetune

DATA = to_prompt_completion(load_records("definitions", "train", n=16))


def _cfg(tmp_path, **kw):
    return TrainConfig(**{"method": "lora", "lora_r": 2, "max_steps": 6, "batch_size": 2, "seq_len": 64,
                          "learning_rate": 1e-3, "output_dir": str(tmp_path), **kw})


def _same_base(tokenizer):
    """The tiny_model fixture's base again (same seed), as a new session would load the same pretrained model."""
    from ftlab.models import tiny_test_model
    torch.manual_seed(0)
    return tiny_test_model(tokenizer)


def _at_step(n, action):
    """A listener doing `action()` when step n has been logged (inside trainer.train, as a fault would)."""
    return lambda e: e["kind"] == "step" and e["step"] == n and not e.get("resumed") and action()


def _raise(exc):
    def f():
        raise exc
    return f


def test_out_of_memory_is_caught_explained_and_the_last_step_saved(tiny_model, tokenizer, tmp_path):
    cfg = _cfg(tmp_path, model="llama-3.1-8b", gpu="T4")  # the message's estimate is for this set-up
    fault = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(OutOfMemory) as info:
        finetune(cfg, DATA, model=tiny_model, tokenizer=tokenizer, eval_before=False,
                 listeners=[_at_step(3, _raise(fault))])
    msg = str(info.value)
    assert "needs about" in msg and "GiB" in msg
    fixes = [msg.index(f) for f in ("gradient_checkpointing=True", "batch_size=1", "bits=4", "seq_len=32")]
    assert fixes == sorted(fixes), msg  # cheapest first
    res = info.value.result
    assert res.stopped and res.stop_reason == "out of memory" and res.steps == 3
    assert os.path.exists(os.path.join(res.saved_to, "adapter_model.safetensors"))
    # the process goes on: the same model still runs a forward
    with torch.no_grad():
        assert torch.isfinite(tiny_model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_a_non_finite_loss_stops_and_puts_back_the_last_good_weights(tiny_model, tokenizer, tmp_path):
    cfg = _cfg(tmp_path)
    model = apply_method(tiny_model, cfg)
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)

    def diverge():  # as if update 2 had blown up: the next forward's loss is nan
        with torch.no_grad():
            lora_b.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss) as info:
        finetune(cfg, DATA, model=model, tokenizer=tokenizer, eval_before=False, apply=False,
                 listeners=[_at_step(2, diverge)])
    msg = str(info.value)
    assert "non-finite" in msg and "step 3" in msg and "learning_rate=0.001" in msg and "step 2" in msg
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert info.value.result.stop_reason == "non-finite loss at step 3"
    reloaded = load_trained(_same_base(tokenizer), info.value.result.saved_to)
    assert all(torch.isfinite(p).all() for n, p in reloaded.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_weights_put_back_are_exactly_those_before_the_bad_update(tiny_model, tokenizer, tmp_path, device):
    """On a GPU the guard copies on a side stream while the step computes: the copy must still be the
    weights of the right step (those after update 1 when step 3's loss is the first nan), bit for bit."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = _cfg(tmp_path)
    model = apply_method(tiny_model.to(device), cfg)
    lora_b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    seen = {}

    def keep():
        seen["after_update_1"] = lora_b.detach().cpu().clone()

    def diverge():
        with torch.no_grad():
            lora_b.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss):
        finetune(cfg, DATA, model=model, tokenizer=tokenizer, eval_before=False, apply=False,
                 listeners=[_at_step(1, keep), _at_step(2, diverge)])
    assert seen["after_update_1"].abs().sum() > 0  # LoRA B starts at 0: update 1 moved it
    assert torch.equal(lora_b.detach().cpu(), seen["after_update_1"])


def test_stop_then_resume_continues_steps_optimizer_and_loss_curve(tiny_model, tokenizer, tmp_path):
    cfg = _cfg(tmp_path)
    cb = ReportCallback()
    cb.listeners.append(_at_step(3, lambda: cb.request_stop("Stop pressed")))
    first, _ = finetune(cfg, DATA, model=tiny_model, tokenizer=tokenizer, callback=cb, eval_before=False)
    assert first.stopped and first.steps == 3 and first.checkpoint == checkpoint_for(cfg)
    ckpt = first.checkpoint
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", "adapter_model.safetensors"} <= set(os.listdir(ckpt))
    assert json.load(open(os.path.join(ckpt, "trainer_state.json")))["global_step"] == 3

    events = []  # as in a new session: the same base loaded afresh, the checkpoint brings the rest
    second, _ = finetune(cfg, DATA, model=_same_base(tokenizer), tokenizer=tokenizer, resume=True,
                         listeners=[events.append], eval_before=False)
    assert second.steps == 6 and not second.stopped
    assert [s for s, _ in second.losses] == [1, 2, 3, 4, 5, 6]   # the curve goes on
    assert [s for s, _ in second.losses[:3]] == [s for s, _ in first.losses]
    assert [e["step"] for e in events if e["kind"] == "step" and not e.get("resumed")] == [4, 5, 6]


def test_resume_without_a_checkpoint_says_so(tiny_model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="resume=True: no checkpoint in output_dir"):
        finetune(_cfg(tmp_path), DATA, model=tiny_model, tokenizer=tokenizer, resume=True)


def test_keyboard_interrupt_is_a_stop_with_a_checkpoint(tiny_model, tokenizer, tmp_path):
    cfg = _cfg(tmp_path)
    res, _ = finetune(cfg, DATA, model=tiny_model, tokenizer=tokenizer, eval_before=False,
                      listeners=[_at_step(2, _raise(KeyboardInterrupt()))])
    assert res.stopped and "KeyboardInterrupt" in res.stop_reason and res.steps == 2
    assert res.checkpoint and os.path.exists(os.path.join(res.saved_to, "adapter_model.safetensors"))


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_readable(tiny_model, tokenizer, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    cb = ReportCallback()
    cb.listeners.append(_at_step(2, lambda: cb.request_stop("Stop pressed")))
    from ftlab.train import train_sft
    model = apply_method(tiny_model, cfg)
    res, trainer = train_sft(model, tokenizer, DATA, cfg, callback=cb)
    ckpt = res.checkpoint
    before = json.load(open(os.path.join(ckpt, "trainer_state.json")))
    trainer.state.global_step = 99  # a later save ...

    def killed(*a, **k):  # ... dies after the weights were written, while the optimizer state is
        raise KeyboardInterrupt("killed during save")
    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(trainer, ckpt)
    monkeypatch.undo()
    assert checkpoint_for(cfg) == ckpt
    assert json.load(open(os.path.join(ckpt, "trainer_state.json"))) == before  # untouched
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".checkpoint.tmp")]  # no half-written folder left
    resumed, _ = finetune(cfg, DATA, model=_same_base(tokenizer), tokenizer=tokenizer,
                          resume=True, eval_before=False)
    assert resumed.steps == 6 and math.isfinite(resumed.last_loss)


@pytest.mark.gpu
def test_a_real_out_of_memory_on_a_gpu_is_caught_and_memory_released(tokenizer, tmp_path):
    """Full fine-tuning of the embedded model with a batch far too large for any GPU: a real CUDA OOM."""
    from ftlab.models import load_model
    torch.cuda.empty_cache()
    base_alloc = torch.cuda.memory_allocated()
    model, tok = load_model("smollm2-135m-instruct")
    cfg = _cfg(tmp_path, method="full", batch_size=512, seq_len=2048, max_steps=2, learning_rate=1e-5)
    long = [{"prompt": [{"role": "user", "content": "word " * 1500}],
             "completion": [{"role": "assistant", "content": "word " * 500}]}] * 512
    with pytest.raises(OutOfMemory) as info:
        finetune(cfg, long, model=model, tokenizer=tok, eval_before=False)
    assert "needs about" in str(info.value) and "GiB free of" in str(info.value)
    del model, info
    import gc
    gc.collect()
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() - base_alloc < 64 * 2**20  # released: under 64 MiB left behind
    # and the next run in the same process trains: LoRA, a batch that fits, two finite losses
    model, tok = load_model("smollm2-135m-instruct")
    short = [{"prompt": [{"role": "user", "content": "Say hello."}],
              "completion": [{"role": "assistant", "content": "Hello."}]}] * 8
    result = finetune(_cfg(tmp_path / "after", max_steps=2, batch_size=4, seq_len=64), short, model=model,
                      tokenizer=tok, eval_before=False)
    assert result.steps == 2 and math.isfinite(result.last_loss)
