"""Copy what scripts/gpu_checks.sh wrote (its $OUT, as the device tool hands it back) into ftlab/measured/, named
<gpu>_<what>_<date> as the other measurements are, with the GPU, the versions and the date inside each file.

    python scripts/gpu_collect.py FOLDER [--dest ftlab/measured]

FOLDER holds versions.json and any of: throughput_lora.json, throughput_full.json (-> <gpu>_throughput_<date>.json,
whose field `ratio` is ftlab ÷ bare TRL, the median, per method), kbit_checkpointing.json, scale_out.json,
corners.jsonl (rows of scripts/measure_memory.py) and oom_tests.xml (pytest's JUnit report, kept as counts and
each test's outcome). A check that did not run is absent and said so; nothing is invented for it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gpu_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA H100 80GB HBM3' -> 'h100', 'cpu' -> 'cpu'."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in ("nvidia", "tesla", "geforce")]
    return words[0] if words else "gpu"


def junit_summary(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        detail = next((child.get("message", "") for child in case if child.tag in ("failure", "error", "skipped")), "")
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0)), "message": detail[:500]})
    return {"tests": len(cases), "passed": sum(c["outcome"] == "passed" for c in cases),
            "failed": sum(c["outcome"] in ("failure", "error") for c in cases),
            "skipped": sum(c["outcome"] == "skipped" for c in cases), "cases": cases}


def collect(folder: Path, dest: Path) -> dict:
    """{written file name: what it holds}; raises SystemExit without versions.json (nothing to name files by)."""
    if not (folder / "versions.json").is_file():
        sys.exit(f"{folder}: no versions.json (gpu_checks.sh writes it first); nothing collected")
    info = json.loads((folder / "versions.json").read_text())
    stem = f"{gpu_slug(info['gpu'])}_{{}}_{info['date']}"
    head = {"gpu": info["gpu"], "date": info["date"], "versions": info["versions"],
            "written_by": "scripts/gpu_checks.sh"}
    written = {}

    def write(what: str, data, suffix: str = ".json") -> None:
        path = dest / (stem.format(what) + suffix)
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps({**row, "measured": f"{info['date']} scripts/gpu_checks.sh"}) + "\n"
                                    for row in data))
        else:
            path.write_text(json.dumps({**head, **data}, indent=1) + "\n")
        written[path.name] = what

    runs = {m: json.loads((folder / f"throughput_{m}.json").read_text())
            for m in ("lora", "full") if (folder / f"throughput_{m}.json").is_file()}
    if runs:
        write("throughput", {"what": "scripts/bench_throughput.py: ftlab's background run against a bare SFTTrainer, "
                                     "alternating runs, tokens/s medians; ratio = ftlab / bare TRL",
                             "ratio": {m: r["ratio"] for m, r in runs.items()}, "runs": runs})
    for name, what in (("kbit_checkpointing.json", "kbit_checkpointing"), ("scale_out.json", "scale_out")):
        if (folder / name).is_file():
            write(what, json.loads((folder / name).read_text()))
    if (folder / "corners.jsonl").is_file():
        rows = [json.loads(line) for line in (folder / "corners.jsonl").read_text().splitlines() if line.strip()]
        write("corners", rows, ".jsonl")
    if (folder / "oom_tests.xml").is_file():
        write("oom_tests", {"what": "pytest -m gpu tests/test_reliability.py",
                            **junit_summary(folder / "oom_tests.xml")})
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--dest", default=str(ROOT / "ftlab" / "measured"))
    a = ap.parse_args()
    written = collect(Path(a.folder), Path(a.dest))
    expected = {"throughput", "kbit_checkpointing", "scale_out", "corners", "oom_tests"}
    for name, what in written.items():
        print(f"wrote {name}")
    missing = sorted(expected - set(written.values()))
    if missing:
        print(f"not in {a.folder} (the check did not run or wrote nothing): {', '.join(missing)}")


if __name__ == "__main__":
    main()
