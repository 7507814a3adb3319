"""The repo's promises about itself: pins agree, labs are clean, the parameters cell documents itself."""
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def test_environment_yml_carries_the_same_pins_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {d.split("==")[0].lower(): d.split("==")[1] for d in deps["dependencies"] + deps["optional-dependencies"]["dev"]}
    yml = re.findall(r"^\s+- ([A-Za-z0-9_.-]+)==([^\s#]+)", (ROOT / "environment.yml").read_text(), re.M)
    assert {k.lower(): v for k, v in yml} == pins
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/run test" in readme and "scripts/run quickstart" in readme
    assert "scripts/run test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name)
def test_lab_has_one_parameters_cell_and_no_outputs(path):
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert not any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][0]["source"][0].startswith("# ")


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name)
def test_lab_markdown_is_prose_not_commented_source(path):
    """A markdown cell converted from a .py source with its comment marks left on renders every line as a
    heading: the title as '# # Lab …', the prose as '# text'. Headings are short lines; prose is not one."""
    nb = json.loads(path.read_text())
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown":
            continue
        lines = [l for l in "".join(c["source"]).splitlines() if l.strip()]
        long_headings = [l for l in lines if l.startswith("# #") or (re.match(r"#+ ", l) and len(l) > 90)]
        assert not long_headings, (i, long_headings[:1])


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name)
def test_parameters_are_documented_for_papermill(path):
    import papermill as pm
    params = pm.inspect_notebook(str(path)).values()
    assert params and all(p["help"] and p["inferred_type_name"] != "None" for p in params), params


@pytest.mark.parametrize("params", ["ci.yaml", "gpu.yaml"])
def test_param_files_name_only_parameters_some_lab_declares(params):
    import yaml
    import papermill as pm
    declared = {name: p["inferred_type_name"] for lab in LABS for name, p in pm.inspect_notebook(str(lab)).items()}
    values = yaml.safe_load((ROOT / "labs" / "params" / params).read_text())
    assert set(values) <= set(declared)
    for name, value in values.items():  # a value of the declared type (papermill does not check)
        assert type(value).__name__ == declared[name] or (declared[name] == "float" and isinstance(value, int)), name
