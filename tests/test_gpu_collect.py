"""scripts/gpu_collect.py: gpu_checks.sh's results into ftlab/measured/, named by GPU and date, nothing invented."""
import json

import pytest

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="2">
<testcase classname="tests.test_reliability" name="test_a[cuda]" time="1.5"/>
<testcase classname="tests.test_reliability" name="test_b" time="9.0"><failure message="OOM not caught">...</failure>
</testcase></testsuite></testsuites>"""


def test_results_are_named_by_gpu_and_date_with_the_ratio_per_method(tmp_path, load_script):
    mod, out, dest = load_script("gpu_collect"), tmp_path / "out", tmp_path / "measured"
    out.mkdir(), dest.mkdir()
    versions = {"torch": "2.11.0+cu130", "transformers": "5.23.0"}
    (out / "versions.json").write_text(json.dumps({"gpu": "NVIDIA H200", "date": "2026-12-24", "versions": versions}))
    (out / "throughput_lora.json").write_text(json.dumps({"ratio": 0.98, "median": {"ftlab": 98, "bare_trl": 100}}))
    (out / "corners.jsonl").write_text(json.dumps({"arch": "gemma-3-270m", "peak_alloc_gb": 7.5}) + "\n")
    (out / "oom_tests.xml").write_text(JUNIT)
    written = mod.collect(out, dest)
    assert written == {"h200_throughput_2026-12-24.json": "throughput", "h200_corners_2026-12-24.jsonl": "corners",
                       "h200_oom_tests_2026-12-24.json": "oom_tests"}  # the checks that did not run: no file
    t = json.loads((dest / "h200_throughput_2026-12-24.json").read_text())
    assert t["ratio"] == {"lora": 0.98} and t["gpu"] == "NVIDIA H200" and t["versions"] == versions
    (row,) = [json.loads(line) for line in (dest / "h200_corners_2026-12-24.jsonl").read_text().splitlines()]
    assert row["peak_alloc_gb"] == 7.5 and row["measured"].startswith("2026-12-24")
    oom = json.loads((dest / "h200_oom_tests_2026-12-24.json").read_text())
    assert (oom["tests"], oom["passed"], oom["failed"]) == (2, 1, 1)
    assert oom["cases"][1]["outcome"] == "failure" and oom["cases"][1]["message"] == "OOM not caught"
    assert mod.gpu_slug("NVIDIA H100 80GB HBM3") == "h100"


def test_without_versions_nothing_is_collected(tmp_path, load_script):
    with pytest.raises(SystemExit, match="no versions.json"):
        load_script("gpu_collect").collect(tmp_path, tmp_path)
