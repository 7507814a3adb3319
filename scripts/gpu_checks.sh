#!/usr/bin/env bash
# Issue #21's GPU checks, in one go, on a bare CUDA machine that reaches no network (the device tool's H200:
# python3 with torch + CUDA, accelerate, pytest; no trl, bitsandbytes, datasets, deepspeed, ipywidgets).
#
# Here first:   .venv/bin/python scripts/gpu_prepare.py        (writes .gpu/: wheels and the tokenizer, ~50 MiB)
# There:        bash scripts/gpu_checks.sh                      (device tool: carry [".gpu"], timeout_s 600)
# Rerun a part: CHECKS=throughput,ablate BUDGET=400 bash scripts/gpu_checks.sh
# Rehearse on a CPU (tiny settings; a venv standing in for the GPU image first on PATH):
#               .venv/bin/python scripts/gpu_prepare.py --python 3.11 --dest /tmp/gpu311
#               PATH=/tmp/imgsim/bin:$PATH SMOKE=1 GPU_DIR=/tmp/gpu311 SITE=/tmp/site311 bash scripts/gpu_checks.sh
#
# Checks, in this order, each with its own time limit and never past BUDGET seconds in all (default 540):
#   oom         the two `gpu`-marked tests (tests/test_reliability.py): the guard's side-stream copy bit for
#               bit, and a real out-of-memory caught, its message, the memory released, the next run training
#   kbit        scripts/kbit_checkpointing.py: 8-bit base + LoRA + checkpointing, reentrant against non-reentrant
#               (peak, device in use, losses, gradients), beside the calculator's estimate
#   throughput  scripts/bench_throughput.py, SmolLM2-135M architecture, 16 x 512 tokens a step, full and LoRA:
#               ftlab's background run against a bare SFTTrainer, alternating, medians; field `ratio`
#   corners     scripts/measure_memory.py --only corner: the calculator's three least-tested corners
#   scale_out   scripts/gpu_scale_out.py: ftlab's launch path at world size 1 (FSDP2, ZeRO-3, QLoRA under FSDP)
#               (last: it gets what the budget leaves; rerun it alone with CHECKS=scale_out if cut short)
#   ablate      (not in the default set) bench_throughput --ablate for both methods: which part costs what
# Results go to $OUT (at most 8 files come back from the device tool): log.txt, versions.json and one file a
# check. Afterwards, here: python scripts/gpu_collect.py <the folder they came back to> (-> ftlab/measured/).
# The SmolLM2-135M-Instruct weights cannot travel (538 MB): the model folder gets random weights of the same
# shapes (memory and speed depend on the shapes, not the values) and the real tokenizer.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-540}
CHECKS=${CHECKS:-oom,kbit,throughput,corners,scale_out}
OUT=${OUT:-/tmp/gpu-checks}
GPU_DIR=${GPU_DIR:-.gpu}
SITE=${SITE:-/tmp/site}
SMOKE=${SMOKE:-}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

[[ -d $GPU_DIR/whl && -d $GPU_DIR/model ]] || { echo "no $GPU_DIR: run scripts/gpu_prepare.py here first, carry .gpu"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$GPU_DIR"/whl/*.whl \
  || { echo "installing the wheels failed"; exit 3; }
# ftlab itself, laid out as pyproject's package-dir installs it (ftlab.widgets is the folder widgets/)
rm -rf "$SITE/ftlab" && cp -r ftlab "$SITE/ftlab" && cp -r widgets "$SITE/ftlab/widgets"
export PYTHONPATH=$SITE GPU_DIR HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  PYTHONUNBUFFERED=1 FTLAB_CACHE=/tmp/ftlab-cache PIP_DISABLE_PIP_VERSION_CHECK=1
echo "== installed in $(( $(date +%s) - START ))s"

python3 - "$OUT/versions.json" <<'PY' || { echo "the model folder or the versions failed"; exit 4; }
import datetime, importlib.metadata as md, json, os, shutil, subprocess, sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM
target = os.path.join(os.environ["FTLAB_CACHE"], "models", "smollm2-135m-instruct")
if not os.path.isfile(os.path.join(target, "model.safetensors")):
    shutil.copytree(os.path.join(os.environ["GPU_DIR"], "model"), target, dirs_exist_ok=True)
    torch.manual_seed(0)  # fp32, as ftlab's converted folder of the real weights
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(target), dtype=torch.float32).save_pretrained(target)
names = ["torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "deepspeed"]
versions = {}
for n in names:
    try:
        versions[n] = md.version(n)
    except md.PackageNotFoundError:
        versions[n] = None
smi = (subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                      capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else None)
info = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "nvidia_smi": smi, "cuda": torch.version.cuda,
        "date": datetime.date.today().isoformat(), "python": sys.version.split()[0], "versions": versions,
        "model": "smollm2-135m-instruct architecture, random weights (seed 0), real tokenizer"}
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
PY

step() {  # NAME SECONDS COMMAND...: runs if CHECKS names it, for at most SECONDS and never past the budget
  local name=$1 want=$2; shift 2
  [[ ,$CHECKS, == *,$name,* ]] || return 0
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local limit=$(( want < left ? want : left ))
  if (( limit < 20 )); then echo "== $name: not run, ${left}s of the ${BUDGET}s budget left"; return 0; fi
  echo "== $name (at most ${limit}s)"
  local t0; t0=$(date +%s)
  timeout -k 10 "$limit" "$@"
  echo "== $name: exit $? after $(( $(date +%s) - t0 ))s"
}

SIZE=(--steps 20 --skip 4 --batch_size 16 --seq_len 512 --repeats 4)
[[ -z $SMOKE ]] || SIZE=(--steps 3 --skip 1 --batch_size 2 --seq_len 128 --repeats 1)
BENCH=(python3 scripts/bench_throughput.py "${SIZE[@]}")
SMALL=(); [[ -z $SMOKE ]] || SMALL=(--smoke)

step oom 90 python3 -m pytest -q -m gpu tests/test_reliability.py -p no:cacheprovider --junitxml="$OUT/oom_tests.xml"
step kbit 120 python3 scripts/kbit_checkpointing.py --out "$OUT/kbit_checkpointing.json" --timeout 100 "${SMALL[@]}"
step throughput 100 "${BENCH[@]}" --method lora --out "$OUT/throughput_lora.json"
step throughput 60 "${BENCH[@]}" --method full --out "$OUT/throughput_full.json"
[[ -z $SMOKE ]] || CHECKS=${CHECKS//corners/}  # measure_memory.py builds its models on CUDA
step corners 110 python3 scripts/measure_memory.py --only corner --out "$OUT/corners.jsonl" --tokenizer "$GPU_DIR/model"
step scale_out 150 python3 scripts/gpu_scale_out.py --out "$OUT/scale_out.json" "${SMALL[@]}"
step ablate 200 "${BENCH[@]}" --method lora --out "$OUT/throughput_lora.json" --ablate --repeats 3
step ablate 120 "${BENCH[@]}" --method full --out "$OUT/throughput_full.json" --ablate --repeats 3

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
for m in ("lora", "full"):
    p = os.path.join(out, f"throughput_{m}.json")
    if os.path.exists(p):
        d = json.load(open(p))
        print(f"throughput {m}: ftlab / bare TRL = {d['ratio']:.3f} (medians {d['median']['ftlab']:.0f} / "
              f"{d['median']['bare_trl']:.0f} tokens/s)")
p = os.path.join(out, "corners.jsonl")
if os.path.exists(p):
    from ftlab.calibration import estimate_args, label
    from ftlab.memory import estimate_memory
    for line in open(p):
        r = json.loads(line)
        if "error" in r:
            print(f"corner {r.get('arch')}: {r['error'][:120]}")
            continue
        e = estimate_memory(**estimate_args(r))
        print(f"corner {label(r)}: in use {r['device_used_gb']:.2f} GiB, estimate {e.total_gib:.2f} "
              f"({e.total_gib / r['device_used_gb'] - 1:+.1%}); peak allocated {r['peak_alloc_gb']:.2f}, "
              f"estimate {e.peak_allocated_gib:.2f} ({e.peak_allocated_gib / r['peak_alloc_gb'] - 1:+.1%})")
PY
echo "== done in $(( $(date +%s) - START ))s; files: $(ls "$OUT" | tr '\n' ' ')"
