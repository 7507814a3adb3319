import contextlib
import threading

import pytest
import torch

from ftlab.config import TrainConfig
from ftlab.data import load_records, to_prompt_completion
from ftlab.measure import MemoryMonitor
from ftlab.methods import apply_method, trainable_parameters
from ftlab.report import ReportCallback
from ftlab.train import train_sft


def _data(n=16):
    return to_prompt_completion(load_records("definitions", "train", n=n))


def test_lora_trains_reports_every_step_and_saves(tiny_model, tokenizer, tmp_path):
    cfg = TrainConfig(method="lora", lora_r=4, max_steps=3, batch_size=2, seq_len=64, learning_rate=1e-3,
                      output_dir=str(tmp_path))
    model = apply_method(tiny_model, cfg)
    n_train, n_total = trainable_parameters(model)
    assert 0 < n_train < n_total
    events, monitor = [], MemoryMonitor(device="cpu").start()
    result, _ = train_sft(model, tokenizer, _data(), cfg, eval_records=_data(4), listeners=[events.append, monitor])
    report = monitor.report() if monitor.stop() else None
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and result.steps == 3
    assert all(e["loss"] > 0 and e["tokens_per_s"] > 0 for e in steps)
    assert [s for s, _ in result.eval_losses] == [0, 3]  # before and after
    assert report["device"] == "cpu" and report["peak_rss_gib"] > 0.1 and "after_first_step" in report["phases"]
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_only_the_method_parameters_get_gradients(tiny_model, tokenizer, tmp_path):
    cfg = TrainConfig(method="lora", lora_r=2, max_steps=1, batch_size=2, seq_len=64, output_dir=str(tmp_path))
    model = apply_method(tiny_model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_sft(model, tokenizer, _data(4), cfg)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_stop_from_another_thread_stops_within_one_step(tiny_model, tokenizer, tmp_path):
    cfg = TrainConfig(max_steps=50, batch_size=2, seq_len=64, output_dir=str(tmp_path))
    cb = ReportCallback()
    cb.listeners.append(lambda e: e["kind"] == "step" and e["step"] == 2 and
                        threading.Thread(target=cb.request_stop, args=("Stop pressed",)).start())
    result, _ = train_sft(apply_method(tiny_model, cfg), tokenizer, _data(), cfg, callback=cb)
    assert result.stopped and result.stop_reason == "Stop pressed"
    assert 2 <= result.steps <= 3


def test_empty_training_data_is_refused(tiny_model, tokenizer, tmp_path):
    cfg = TrainConfig(max_steps=1, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="train_records is empty"):
        train_sft(tiny_model, tokenizer, [], cfg)


@pytest.mark.parametrize("method", ["full", "dora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning"])
def test_each_method_trains_two_steps(method, tiny_model, tokenizer, tmp_path):
    cfg = TrainConfig(method=method, lora_r=2, num_virtual_tokens=4, max_steps=2, batch_size=2, seq_len=64,
                      output_dir=str(tmp_path))
    model = apply_method(tiny_model, cfg)
    result, _ = train_sft(model, tokenizer, _data(4), cfg)
    assert result.steps == 2 and len(result.losses) == 2


def test_bitfit_on_a_model_without_biases_says_so(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="no bias terms"):
        apply_method(tiny_model, TrainConfig(method="bitfit", output_dir=str(tmp_path)))


def test_target_modules_the_model_lacks_are_named(tiny_model, tmp_path):
    with pytest.raises(ValueError, match=r"no module named \['c_attn'\].*q_proj"):
        apply_method(tiny_model, TrainConfig(lora_targets=["c_attn"], output_dir=str(tmp_path)))


def test_background_run_returns_at_once_and_stop_saves_the_last_step(tiny_model, tokenizer, tmp_path):
    from ftlab.runner import Run
    from ftlab.train import finetune
    cfg = TrainConfig(max_steps=200, batch_size=2, seq_len=64, output_dir=str(tmp_path))
    events, steps_seen = [], threading.Event()
    run = Run(lambda cb: finetune(cfg, _data(), model=tiny_model, tokenizer=tokenizer, callback=cb),
              listeners=[events.append, lambda e: e["kind"] == "step" and e["step"] >= 2 and steps_seen.set()])
    run.start(background=True)
    assert run.running  # the caller (a notebook cell) has its prompt back while training goes on
    assert steps_seen.wait(120)
    run.stop("Stop pressed")
    result = run.wait(120)
    assert result.stopped and result.stop_reason == "Stop pressed" and result.steps < 200
    assert result.saved_to == str(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    kinds = [e["kind"] for e in events]
    assert kinds[-1] == "finished" and "end" in kinds
    step = next(e for e in events if e["kind"] == "step")
    assert step["memory_gib"] > 0 and step["memory_kind"] in ("process RSS", "cuda allocated")


def test_a_failing_background_run_reports_the_error(tiny_model, tokenizer, tmp_path):
    from ftlab.runner import Run
    from ftlab.train import finetune
    cfg = TrainConfig(max_steps=2, batch_size=2, seq_len=64, output_dir=str(tmp_path))
    events = []
    run = Run(lambda cb: finetune(cfg, [], model=tiny_model, tokenizer=tokenizer, callback=cb), listeners=[events.append])
    run.start(background=True)
    with pytest.raises(ValueError, match="train_records is empty"):
        run.wait(60)
    assert events[-1]["kind"] == "error" and not run.running


def test_background_runs_share_one_long_lived_daemon_thread():
    """PyTorch keeps per-thread caches (cuDNN attention graphs): every background run goes to the same thread,
    one after another, and a run that fails does not take that thread down."""
    from ftlab.runner import Run
    seen, gate = [], threading.Event()

    def job(name, fail=False, wait_for=None):
        def target(cb):
            if wait_for is not None:
                assert wait_for.wait(30)
            seen.append((name, threading.current_thread()))
            if fail:
                raise RuntimeError("planted failure")
            return name
        return target

    first = Run(job("first", wait_for=gate)).start(background=True)
    second = Run(job("second", fail=True)).start(background=True)
    assert first.running and second.running and not seen  # queued behind the first, which waits for the gate
    gate.set()
    first.wait(30)
    with pytest.raises(RuntimeError, match="planted failure"):
        second.wait(30)
    third = Run(job("third")).start(background=True)
    third.wait(30)
    assert [n for n, _ in seen] == ["first", "second", "third"]
    threads = {t for _, t in seen}
    assert len(threads) == 1 and first.thread is second.thread is third.thread
    (t,) = threads
    assert t is not threading.current_thread() and t.daemon and t.name == "ftlab-train" and t.is_alive()
    assert third.value == "third" and not third.running and third.done


def test_a_run_is_done_when_its_listeners_hear_it_finished():
    """What a listener shows ("done: 10 steps") is already true of the run: a notebook cell run on seeing it gets
    the result (in the browser, the cells below the run once met a run that was not done yet)."""
    from ftlab.runner import Run
    seen = []
    for fail in (False, True):
        def target(cb, fail=fail):
            if fail:
                raise RuntimeError("planted failure")
            return "value"
        run = Run(target, listeners=[lambda e: seen.append((e["kind"], run.done, run.value, run.error))])
        run.start(background=True)
        with contextlib.suppress(RuntimeError):
            run.wait(30)
    assert [(k, done) for k, done, _, _ in seen] == [("finished", True), ("error", True)]
    assert seen[0][2] == "value" and isinstance(seen[1][3], RuntimeError)


def _long_prompt_records(n_long, n_short):
    long = "word " * 200
    return [{"prompt": [{"role": "user", "content": long}], "completion": [{"role": "assistant", "content": "yes"}]}
            for _ in range(n_long)] + \
           [{"prompt": [{"role": "user", "content": "Say yes."}], "completion": [{"role": "assistant", "content": "yes"}]}
            for _ in range(n_short)]


def test_examples_dropped_by_truncation_are_counted_and_said(tiny_model, tokenizer, tmp_path, capsys):
    # 3 of 4 prompts fill seq_len alone: TRL drops them (no loss token left); the run says so and counts them
    cfg = TrainConfig(method="full", max_steps=1, batch_size=1, seq_len=64, output_dir=str(tmp_path))
    result, _ = train_sft(apply_method(tiny_model, cfg), tokenizer, _long_prompt_records(3, 1), cfg)
    assert (result.examples, result.dropped_examples, result.truncated_examples) == (4, 3, 0)
    assert result.summary()["dropped_examples"] == 3
    out = capsys.readouterr().out
    assert "of 4 training examples, 3 were left out" in out and "seq_len=64" in out


def test_nothing_left_after_truncation_is_refused_before_training(tiny_model, tokenizer, tmp_path):
    from ftlab.errors import DataError
    cfg = TrainConfig(method="full", max_steps=1, batch_size=1, seq_len=64, output_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"none of the 2 examples keeps a completion token within seq_len=64") as e:
        train_sft(apply_method(tiny_model, cfg), tokenizer, _long_prompt_records(2, 0), cfg)
    assert e.value.field == "seq_len"
