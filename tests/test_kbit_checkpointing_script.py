"""scripts/kbit_checkpointing.py (issue #21, check 3): its CPU smoke end to end, and its verdict on GPU-shaped rows."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kbit_checkpointing.py"


def test_smoke_compares_both_variants_on_the_cpu(tmp_path):
    out = tmp_path / "kbit.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--smoke", "--variants", "non_reentrant",
                        "reentrant"], env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["gpu"] == "cpu" and d["what"] and d["date"] and d["versions"]["bitsandbytes"]
    rows = d["variants"]
    assert not [v for v, r in rows.items() if "error" in r], rows
    # the variants really differ in how they checkpoint: the reentrant one's layers end in torch's CheckpointFunction
    assert rows["non_reentrant"]["checkpoint_kwargs"] == {"use_reentrant": False}
    assert "CheckpointFunctionBackward" in rows["reentrant"]["last_layer_output_grad_fn"]
    assert "CheckpointFunctionBackward" not in rows["non_reentrant"]["last_layer_output_grad_fn"]
    assert rows["reentrant"]["n_int8_layers"] == 14  # 2 layers x 7 linear: the base is 8-bit on the CPU too
    (c,) = d["comparisons"]
    assert c["same_lora_init"] and c["same_input"] and len(c["steps"]) == 3
    assert d["reentrant_matches_non_reentrant"] is True, d["how"]
    assert d["verdict"].startswith("memory not measured")
    assert abs(d["ftlab_estimate"]["plain"]["total_gib"] - 9.48) < 0.5  # the GPU set-up's, beside the smoke


def test_verdict_is_computed_from_the_numbers(load_script):
    mod = load_script("kbit_checkpointing")
    rows = {"non_reentrant": {"peak_alloc_gb": 8.0, "device_used_gb": 9.3, "losses": [10.8, 10.79]},
            "reentrant": {"peak_alloc_gb": 4.0, "device_used_gb": 4.9, "losses": [10.8, 10.79]}}
    cmp = {"reference": "non_reentrant", "variant": "reentrant", "grads_within_rtol": True, "losses_within_rtol": True,
           "same_lora_init": True, "same_input": True, "all_bitwise_identical": False, "losses_identical": True,
           "max_rel_diff": 2e-6, "max_abs_diff": 1e-9, "rtol": 1e-3, "loss_rel_diff": [0.0, 0.0]}
    est = {"plain": {"total_gib": 9.48}}
    v = mod.verdict(rows, [cmp], est, smoke=False)
    assert v["verdict"].startswith("reentrant is lighter and correct") and v["lighter"] == "reentrant"
    assert abs(v["reentrant_lighter_by_device_used_gib"] - 4.4) < 1e-9
    assert v["estimate_follows"] == "non_reentrant"
    wrong = {**cmp, "grads_within_rtol": False, "max_rel_diff": 0.5}
    assert "NOT correct" in mod.verdict(rows, [wrong], est, smoke=False)["verdict"]
    same = {**rows, "reentrant": {**rows["reentrant"], "peak_alloc_gb": 7.99}}
    assert mod.verdict(same, [cmp], est, smoke=False)["verdict"].startswith("same memory")
    failed = {**rows, "reentrant": {"variant": "reentrant", "error": "OutOfMemoryError: ..."}}
    assert mod.verdict(failed, [], est, smoke=False)["verdict"].startswith("incomplete: reentrant")
