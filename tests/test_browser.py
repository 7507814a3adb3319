"""The quickstart in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

Opens the quickstart with the CI parameters (interactive left on) and does what a person would: runs the
panel's cell, sees the panel and its memory bar, moves the rank slider (the estimate changes), uploads a
small JSONL of their own in the data tab, runs the rest; Run trains on that file and points appear on the loss
plot; Stop stops; a shorter run is set in the training tab and trains to its end on that file.
Screenshots go to outputs/browser/ (kept by CI as artifacts). Needs Debian's chromium (`.ci/run` installs it); skipped where it is missing unless
FTLAB_REQUIRE_BROWSER=1 (set by `.ci/run`), which turns the skip into a failure.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "outputs" / "browser"


def _need_browser():
    missing = [what for what, ok in (("chromium", os.path.exists(CHROMIUM)),
                                     ("playwright", _importable("playwright"))) if not ok]
    if missing:
        if os.environ.get("FTLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test needs {missing}: `.ci/run` installs them (apt chromium, pip playwright)")
        pytest.skip(f"needs {missing}")


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving tmp_path, with the quickstart prepared (parameters injected, not run)."""
    _need_browser()
    import papermill as pm
    import yaml
    params = yaml.safe_load((ROOT / "labs" / "params" / "ci.yaml").read_text())
    params.update(interactive=True, output_dir=str(tmp_path / "run"))
    pm.execute_notebook(str(ROOT / "labs" / "00_quickstart.ipynb"), str(tmp_path / "quickstart.ipynb"),
                        parameters=params, prepare_only=True, kernel_name="ftlab", log_output=False)
    port, token = _free_port(), "ftlab-browser-test"
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')  # no news pop-up
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
                             "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            cwd=ROOT / "labs", stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                 "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")})
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/quickstart.ipynb?token={token}", tmp_path
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_from(page, text: str, command: str) -> None:
    """Make the first cell whose source holds `text` the active one, then run a notebook command
    (notebook:run-all-above, notebook:run-all-below) as the Run menu does."""
    index = page.evaluate("""text => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        const i = nb.widgets.findIndex(c => c.model.sharedModel.getSource().includes(text));
        nb.activeCellIndex = i;
        return i;
    }""", text)
    assert index >= 0, f"no cell holds {text!r}"
    page.evaluate("command => window.jupyterapp.commands.execute(command)", command)


@pytest.mark.slow
@pytest.mark.browser
def test_quickstart_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright
    url, tmp = lab
    from ftlab.data import load_records
    mine = tmp / "upload" / "mine.jsonl"  # a person's own 60 pairs (real WordNet glosses), uploaded in the data tab
    mine.parent.mkdir()
    mine.write_text("".join(json.dumps({"prompt": r["source"], "completion": r["target"]}) + "\n"
                            for r in load_records("definitions", "train", n=60, seed=5)))
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=60_000)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            # wait for the kernel, then run every cell as a person would from the Run menu
            page.wait_for_function("document.querySelector('.jp-Notebook') !== null", timeout=60_000)
            time.sleep(2)
            page.wait_for_function("""() => {  // a command sent before the kernel is up runs nothing
                const k = window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel;
                return k && k.status === 'idle';
            }""", timeout=120_000)
            run_from(page, "Change anything in the panel", "notebook:run-all-above")  # the cells up to the panel

            panel = page.locator(".widget-vbox", has_text="Fine-tuning set-up").first
            expect(panel).to_be_visible(timeout=180_000)
            readout = page.locator(".widget-html", has_text="Estimated GPU memory").first
            expect(readout).to_be_visible(timeout=60_000)
            expect(panel.locator(".js-plotly-plot", has_text="GiB of").first).to_be_visible(timeout=60_000)  # vs the GPU
            before = readout.inner_text()
            panel.screenshot(path=str(SHOTS / "1-panel.png"))

            # move the rank slider (method tab) with the keyboard (noUiSlider handles take arrow keys), as a drag would
            panel.locator(".lm-TabBar-tab", has_text="method").first.click()
            slider = page.locator(".widget-slider", has_text="LoRA rank r").first
            expect(slider).to_be_visible()
            handle = slider.locator(".noUi-handle").first
            handle.click()  # focus, as a person's click on it would
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            expect(slider).to_contain_text("32", timeout=30_000)  # 8 -> 16 -> 32
            page.wait_for_function("([el, before]) => el.innerText !== before",
                                   arg=[readout.element_handle(), before], timeout=30_000)
            after = readout.inner_text()
            assert re.search(r"\d+\.\d\d GiB", after) and after != before
            panel.screenshot(path=str(SHOTS / "2-rank-moved.png"))

            # the data tab: upload a file of one's own; the panel reads it and it becomes the dataset
            panel.locator(".lm-TabBar-tab", has_text="data").first.click()
            # ipywidgets' upload button clicks a file input it never puts in the page: answer the file chooser
            with page.expect_file_chooser() as chooser:
                panel.locator("button", has_text="upload").first.click()
            chooser.value.set_files(str(mine))
            expect(panel.get_by_text("mine.jsonl: 60 examples → 54 train, 6 validation")).to_be_visible(timeout=60_000)
            panel.screenshot(path=str(SHOTS / "3-data.png"))

            run_from(page, "Change anything in the panel", "notebook:run-all-below")  # the rest, as Run all would
            # the training cell shows Run and Stop; the run stops at the cell after it (no result yet)
            run = page.locator(".widget-button", has_text="Run").first
            expect(run).to_be_visible(timeout=300_000)
            expect(page.get_by_text("No run yet: press Run above")).to_be_visible(timeout=60_000)
            # cell 5 took the uploaded file
            expect(page.get_by_text(re.compile(r"mine\.jsonl: 54 training, 6 validation, 6 scored"))).to_be_visible()
            run.scroll_into_view_if_needed()
            run.click()
            loss_plot = page.locator(".js-plotly-plot", has_text="Training loss").first
            # the plot's own data in the page: trace 0 is the training loss, one point a logged step
            page.wait_for_function("el => el.data && el.data[0].x && el.data[0].x.length >= 1",
                                   arg=loss_plot.element_handle(), timeout=300_000)
            assert loss_plot.locator(".scatterlayer .trace path.point").count() >= 2  # validation at 0, step 1
            page.screenshot(path=str(SHOTS / "4-training.png"), full_page=False)

            stop = page.locator(".widget-button", has_text="Stop").first
            stop.click()
            status = page.locator(".widget-html", has_text="stopped at step").first
            expect(status).to_be_visible(timeout=300_000)
            text = status.inner_text()
            step = int(re.search(r"stopped at step (\d+)", text).group(1))
            assert 1 <= step < 20, text  # stopped well before the 20 CI steps
            page.screenshot(path=str(SHOTS / "5-stopped.png"), full_page=False)
            assert (tmp / "run" / "adapter" / "adapter_model.safetensors").exists()  # the last step was saved

            # a shorter run, set in the training tab, to the end; then the cells below it
            panel.scroll_into_view_if_needed()
            panel.locator(".lm-TabBar-tab", has_text="training").first.click()
            steps = panel.locator("xpath=//label[normalize-space()='steps']/following-sibling::input").first
            steps.fill("10")
            steps.press("Enter")
            run.scroll_into_view_if_needed()
            run.click()
            # "done" once the run has returned (evaluated and saved), which the cells below ask for
            expect(page.locator(".widget-html", has_text=re.compile(r"done: 10 steps in \d+ s, \d+ tokens/s")).first
                   ).to_be_visible(timeout=400_000)
            page.screenshot(path=str(SHOTS / "6-finished.png"), full_page=False)

            # the cells below the run (its numbers, the scores), then the playground: ask about a held-out example
            run_from(page, "controls.require_result()", "notebook:run-all-below")
            play = page.locator(".widget-vbox", has_text="Playground").first
            expect(play).to_be_visible(timeout=400_000)
            play.scroll_into_view_if_needed()
            play.locator("select").first.select_option(index=1)  # the first held-out example
            play.locator("button", has_text="Generate").first.click()
            answers = play.get_by_text(re.compile(r"\d+ tokens · \d+\.\d s"))
            expect(answers).to_have_count(2, timeout=180_000)  # the base model and the trained one, side by side
            play.screenshot(path=str(SHOTS / "7-playground.png"))
        except Exception:
            page.screenshot(path=str(SHOTS / "failure.png"), full_page=False)
            cells = page.evaluate("""() => window.jupyterapp.shell.currentWidget.content.widgets.map((c, i) =>
                [i, c.model.type, c.model.sharedModel.execution_count ?? null,
                 c.model.outputs ? JSON.stringify(c.model.outputs.toJSON()).slice(0, 1500) : "",
                 c.model.sharedModel.getSource().slice(0, 60)])""")
            (SHOTS / "failure-cells.json").write_text(json.dumps(cells, indent=1))  # which cells ran
            raise
        finally:
            browser.close()
