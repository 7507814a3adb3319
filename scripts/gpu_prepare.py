"""Prepare, on this machine, what scripts/gpu_checks.sh needs on a bare GPU machine that reaches no network.

The GPU machine has torch (CUDA), accelerate and a scientific stack but not ftlab's training stack. This
script writes the folder `.gpu/` (git-ignored through .git/info/exclude) with:
  whl/     wheels of every distribution ftlab's GPU checks import that the machine lacks, at the versions
           of this project's .venv (pyproject's pins), for CPython 3.12 on x86-64 Linux; bitsandbytes'
           wheel is repacked with only the CUDA 13.0 library and the CPU one (the GPU machine's torch is
           cu130; the full wheel, 43 MB with eleven CUDA and ROCm builds, would not fit the 64 MiB a call
           may carry); DeepSpeed, published only as source, is built into a wheel here (pure Python: its
           CUDA ops are compiled just in time where they run, or not at all)
  model/   the SmolLM2-135M-Instruct tokenizer and config (no weights: the real weights, 538 MB as fp32,
           cannot travel; gpu_checks.sh builds random weights of the same shapes there, which is what memory
           and throughput depend on)
It prints the total size, which must stay under the device tool's 64 MiB with the repository.

    .venv/bin/python scripts/gpu_prepare.py            # then: run scripts/gpu_checks.sh there, carry .gpu
    .venv/bin/python scripts/gpu_prepare.py --python 3.11 --dest /tmp/gpu311   # a rehearsal on this CPU
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU = ROOT / ".gpu"
# What the GPU image already holds (its package list, /work/.library/device/KINDS.md, read 2026-11-17).
# torch, accelerate, numpy, pandas, pyarrow, safetensors, tokenizers, huggingface-hub come from there.
IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
# Carried even though the image has a version: ftlab's pins differ, and the checks must run the versions
# the project runs (the calibration rows of 2026-11-22 ran transformers 5.23 and peft 0.21 likewise).
PINNED = ["transformers", "peft"]
# What the checks import: the training stack, the live plots (bench_throughput's listeners), the metrics
# modules ftlab.evaluation loads, DeepSpeed for ZeRO-3.
ROOTS = ["trl", "peft", "transformers", "bitsandbytes", "datasets", "evaluate", "rouge-score", "nltk", "ipywidgets",
         "plotly", "anywidget", "deepspeed"]
SOURCE_ONLY = {"deepspeed", "rouge-score"}  # published as source only: built into (pure-Python) wheels here
MODEL = "smollm2-135m-instruct"
LIMIT_MIB = 64


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> dict[str, str]:
    """{distribution: installed version} of `roots` and everything they require (markers for extras skipped),
    as this interpreter's environment resolved them."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a requirement for another platform or Python, not installed here
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            if ";" in req and not _marker_ok(req.split(";", 1)[1]):
                continue
            todo.append(re.split(r"[\s<>=!~\[;(]", req.strip(), maxsplit=1)[0])
    return seen


def _marker_ok(marker: str) -> bool:
    from packaging.markers import Marker
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    return Marker(marker).evaluate(env)


def download(dists: dict[str, str], dest: Path, python: str = "3.12") -> None:
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)]
    pure = [f"{d}=={v}" for d, v in dists.items() if d not in SOURCE_ONLY]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none",
           *platforms, "--platform=manylinux2014_x86_64", "--platform=any", "-d", str(dest), *pure]
    subprocess.run(cmd, check=True)
    for d in SOURCE_ONLY & set(dists):  # deepspeed's setup.py imports torch, hence no build isolation
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(dest), f"{d}=={dists[d]}"], check=True, env={**os.environ, "DS_BUILD_OPS": "0"})


def repack_bitsandbytes(dest: Path, keep: tuple[str, ...] = ("cuda130", "cpu")) -> None:
    """Rewrite bitsandbytes' wheel without the native libraries of other CUDA/ROCm versions (RECORD updated)."""
    for whl in dest.glob("bitsandbytes-*.whl"):
        tmp = whl.with_suffix(".tmp")
        with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            dropped = set()
            for info in src.infolist():
                base = Path(info.filename).name
                if base.startswith("libbitsandbytes_") and not any(f"_{k}." in base for k in keep):
                    dropped.add(info.filename)
            for info in src.infolist():
                if info.filename in dropped:
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = "".join(line + "\n" for line in data.decode().splitlines()
                                   if line.split(",")[0] not in dropped).encode()
                out.writestr(info, data)
        tmp.replace(whl)
        print(f"bitsandbytes: dropped {len(dropped)} native libraries of other CUDA/ROCm versions")


def copy_model_files(dest: Path) -> None:
    from ftlab.models.embedded import embedded_folder
    src = embedded_folder(MODEL)
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin"):
            shutil.copy2(f, dest / f.name)


def _digest(path: Path) -> str:  # RECORD-style sha256, for the manifest
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def main() -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (3.12); another for a rehearsal here")
    ap.add_argument("--dest", default=str(GPU), help="where to write (default .gpu, what gpu_checks.sh reads)")
    a = ap.parse_args()
    gpu = Path(a.dest)
    exclude = ROOT / subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, capture_output=True,
                                    text=True, check=True).stdout.strip()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    if "/.gpu/" not in (exclude.read_text() if exclude.exists() else ""):
        with exclude.open("a") as f:
            f.write("/.gpu/\n")
    shutil.rmtree(gpu, ignore_errors=True)
    whl = gpu / "whl"
    whl.mkdir(parents=True)
    dists = {d: v for d, v in closure(ROOTS).items() if d not in IMAGE or d in PINNED}
    print(f"{len(dists)} distributions to carry: " + ", ".join(f"{d}=={v}" for d, v in sorted(dists.items())))
    download(dists, whl, a.python)
    repack_bitsandbytes(whl)
    copy_model_files(gpu / "model")
    got = {norm(p.name.split("-")[0]) for p in whl.glob("*.whl")}
    missing = sorted(set(dists) - got)
    if missing:
        sys.exit(f"no wheel for: {missing}")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    repo_bytes = sum((ROOT / p).stat().st_size for p in tracked.decode().split("\0") if p and (ROOT / p).is_file())
    carried = sum(p.stat().st_size for p in gpu.rglob("*") if p.is_file())
    (gpu / "MANIFEST").write_text("".join(f"{p.relative_to(gpu)} {p.stat().st_size} {_digest(p)}\n"
                                          for p in sorted(gpu.rglob("*")) if p.is_file()))
    total = (repo_bytes + carried) / 2**20
    print(f"{gpu}: {carried / 2**20:.1f} MiB ({len(list(whl.glob('*.whl')))} wheels); repository "
          f"{repo_bytes / 2**20:.1f} MiB; together {total:.1f} MiB of the {LIMIT_MIB} MiB a call carries")
    if total > LIMIT_MIB:
        sys.exit("too large for one call")


if __name__ == "__main__":
    main()
