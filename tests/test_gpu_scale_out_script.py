"""scripts/gpu_scale_out.py (issue #21 check 5) runs its CPU smoke: one set-up through ftlab's launch path
(write_launch + run_launch) at world size 1 on a CPU process, and writes the JSON gpu_checks.sh collects."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.processes
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_smoke_of_fsdp_full_writes_its_row(tmp_path):
    out = tmp_path / "scale_out.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gpu_scale_out.py"), "--out", str(out),
                        "--smoke", "--only", "fsdp_full", "--workdir", str(tmp_path / "work")],
                       env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"what", "gpu", "date", "versions", "settings", "results"} <= set(data)
    assert data["gpu"] == "cpu" and data["settings"]["smoke"] is True
    (row,) = data["results"]
    assert row["name"] == "fsdp_full" and row["strategy"] == "fsdp" and row["method"] == "full"
    assert row["ran"], row.get("error")
    assert row["world_size"] == 1 and row["steps"] == data["settings"]["steps"] == len(row["losses"])
    assert row["estimate"]["peak_allocated_gib"] > 0  # the per-GPU estimate of the same config
    assert row["measured"]["events_kind"] == ["process RSS"] and row["measured"]["events_peak_gib"] > 0
    assert row["run_json"]["status"] == "finished"
    # the probe saw the run from inside rank 0: on a CPU accelerate runs an FSDP plugin as plain DDP
    assert row["probe"]["train_end"]["engine"]["distributed_type"].endswith("MULTI_CPU")
    assert "fsdp_full: ran" in p.stdout
