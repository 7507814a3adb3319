"""The CPU as a device of the memory calculator (ftlab.memory_cpu): estimate_memory(..., device="cpu") against the
peak RSS measured by scripts/measure_cpu_memory.py (ftlab/measured/cpu_*.json), its bad values, the GPU estimate
unchanged beside it, and (slow) one short quickstart-like run measured live."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.config import TrainConfig
from ftlab.errors import ConfigError
from ftlab.memory import estimate, estimate_memory
from ftlab.memory_cpu import GOOD_WEIGHTS_MAX_PARAMS
from ftlab.memory_setup import Setup

ROOT = Path(__file__).resolve().parent.parent
MEASURED = sorted((ROOT / "ftlab" / "measured").glob("cpu_*core_*.json"))
ROWS = [(f.name, r) for f in MEASURED for r in json.loads(f.read_text())["rows"] if "peak_rss_gib" in r]
SMOL = "smollm2-135m-instruct"


def test_there_are_measured_rows():
    assert len(ROWS) >= 6, MEASURED


@pytest.mark.parametrize("name,row", ROWS, ids=[f"{n}:{r['setup']}" for n, r in ROWS])
def test_estimate_within_15_percent_of_measured_peak_rss(name, row):
    est = estimate_memory(row["model"], **row["arguments"], device="cpu")
    err = (est.total_gib - row["peak_rss_gib"]) / row["peak_rss_gib"]
    assert abs(err) <= 0.15, (row["setup"], est.total_gib, row["peak_rss_gib"], est.components)


def test_the_measured_file_says_where_it_ran_and_which_rows_chose_the_constants():
    for f in MEASURED:
        d = json.loads(f.read_text())
        assert {"cpu", "cores", "ram_gib"} <= set(d["machine"]) and d["versions"]["torch"] and d["date"]
        assert set(d["chose_constants"]) <= {"baseline", *(r["setup"] for r in d["rows"])}


@pytest.mark.parametrize("bad", ["tpu", "CPU", "cuda:0", "", None, 0, ["cpu"]])
def test_bad_device_is_a_config_error_naming_it(bad):
    with pytest.raises(ConfigError) as e:
        estimate_memory(SMOL, device=bad)
    assert e.value.field == "device" and "'cpu'" in str(e.value) and "'cuda'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        estimate_memory(TrainConfig(model=SMOL), device=bad)
    assert e.value.field == "device"


def test_cpu_refuses_a_several_gpu_layout():
    with pytest.raises(ConfigError) as e:
        estimate_memory(SMOL, device="cpu", num_gpus=2)
    assert e.value.field == "num_gpus" and "device='cpu'" in str(e.value)


def test_cuda_estimate_is_unchanged_by_the_new_argument():
    kw = dict(method="lora", lora_r=8, batch_size=4, seq_len=128, gpu="T4")
    default, cuda = estimate_memory(SMOL, **kw), estimate_memory(SMOL, **kw, device="cuda")
    built = estimate(Setup.build(SMOL, **kw))  # the steps as before: no device given anywhere
    assert default.components == cuda.components == built.components and default.total_gib == cuda.total_gib
    assert "cuda_context" in cuda.components and "baseline" not in cuda.components and cuda.fits.gpu == "T4"
    cfg = TrainConfig(model=SMOL, method="lora", lora_r=8, batch_size=4, seq_len=128, gpu="T4")
    assert estimate_memory(cfg).total_gib == estimate_memory(cfg, device="cuda").total_gib


def test_cpu_estimate_parts_and_fit():
    cfg = TrainConfig(model=SMOL, method="full", batch_size=4, seq_len=128, gpu="T4")
    est = estimate_memory(cfg, device="cpu")
    c = est.components
    n = est.trainable_params
    assert c["weights"] == pytest.approx(4 * n / 2**30)  # fp32 on a CPU whatever the GPU would store
    assert c["optimizer"] == pytest.approx(2 * c["weights"]) and c["good_weights"] == pytest.approx(2 * c["weights"])
    assert est.total_gib == pytest.approx(sum(c.values()))
    assert est.peak_allocated_gib == pytest.approx(est.total_gib - c["baseline"])
    assert "RAM" in str(est.fits) and est.fits.total_gib > 0 and bool(est.fits) == (est.total_gib <= est.fits.total_gib)
    lora = estimate_memory(SMOL, method="lora", lora_r=8, batch_size=4, seq_len=128, device="cpu")
    assert lora.total_gib < est.total_gib and lora.components["optimizer"] < 0.05
    q = estimate_memory(SMOL, method="qlora", lora_r=8, batch_size=4, seq_len=128, device="cpu")
    assert q.components["weights"] < lora.components["weights"] and q.components["checkpoint"] > 0


def test_good_weights_limit_matches_the_guard():
    from ftlab.guard import GoodWeights
    assert GoodWeights().max_params == GOOD_WEIGHTS_MAX_PARAMS


LIVE = """
import json
from ftlab.config import TrainConfig
from ftlab.data import sft_data
from ftlab.memory import estimate_memory
from ftlab.models import load_tokenizer
from ftlab.runs import run_and_measure
c = TrainConfig(model="smollm2-135m-instruct", method="lora", lora_r=8, dataset="email_subject", batch_size=4,
                seq_len=128, max_steps=3, output_dir={out!r})
import ftlab.widgets, pandas, trl, peft  # the notebook's libraries, as the baseline assumes
tok = load_tokenizer(c.model)
train, val = sft_data(c, tok, n_validation=4)
row = run_and_measure(c, train, val)
print("ROW" + json.dumps([row["measured_gib"], estimate_memory(c, device="cpu").total_gib]))
"""


@pytest.mark.slow
def test_live_quickstart_like_run_within_15_percent(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", LIVE.format(out=str(tmp_path / "run"))], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured, estimated = json.loads(proc.stdout.split("ROW")[-1])
    assert abs(estimated - measured) / measured <= 0.15, (measured, estimated)
