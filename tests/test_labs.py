"""The labs, run headlessly under papermill as CI runs them, checked through their results.json."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.results import read_results

ROOT = Path(__file__).resolve().parent.parent


def run_lab(name: str, out: Path, *params: str) -> dict:
    """papermill with labs/params/ci.yaml; returns the lab's results.json."""
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "labs" / name), str(out / name), "-k", "ftlab",
           "--cwd", str(ROOT / "labs"), "-f", str(ROOT / "labs" / "params" / "ci.yaml"),
           "-p", "output_dir", str(out / "run"), *params]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return read_results(out / "run")


@pytest.mark.slow
def test_quickstart_with_ci_parameters(tmp_path):
    r = run_lab("00_quickstart.ipynb", tmp_path)
    t = r["train"]
    assert r["config"]["method"] == "lora" and r["config"]["max_steps"] == 20 and r["device"] in ("cpu", "cuda")
    assert r["model_source"].endswith("smollm2-135m-instruct") or "SmolLM2" in r["model_source"]
    assert t["steps"] == 20 and not t["stopped"]
    assert t["eval_loss_after"] < t["eval_loss_before"]            # held-out loss fell
    assert 0 < r["trainable_parameters"] < 0.05 * r["total_parameters"]
    assert 0 <= r["rouge_before"]["rougeL"] <= 1 and 0 <= r["rouge_after"]["rougeL"] <= 1
    assert len(r["examples"]) == 16
    assert (r["memory"]["peak_rss_gib"] if r["memory"]["device"] == "cpu" else r["memory"]["peak_allocated_gib"]) > 0.3
    assert Path(r["adapter_dir"], "adapter_model.safetensors").exists()
    est = r["memory_estimate"]
    assert est["gpu"] == "T4" and est["total_gib"] == pytest.approx(sum(est["components"].values()))
    executed = (tmp_path / "00_quickstart.ipynb").read_text()
    assert "injected-parameters" in executed and "Traceback" not in executed


@pytest.mark.slow
def test_memory_calculator_lab(tmp_path):
    r = run_lab("01_memory_calculator.ipynb", tmp_path)
    assert r["serving_formula_gb"] == pytest.approx(168.0)
    assert r["calibration"]["shared"]["rows"] == 26 and r["calibration"]["shared"]["within ±10 %"] == 26
    assert 1000 <= sum(r["full_65b_parts_gb"].values()) <= 1400
    assert r["your_setup"]["total_gib"] == pytest.approx(sum(r["your_setup"]["components_gib"].values()))
    assert "✓" in r["fit_grid"]["llama-3.1-8b/qlora"]["T4"] and "✗" in r["fit_grid"]["llama-2-70b/full"]["H100-80GB"]
