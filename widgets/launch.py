"""The panel's "export launch files" row: a folder (inside the lab's output root, like the run folder), the main
machine's address (shown with several machines), a button that writes the launch files of the panel's config and
layout (ftlab's write_launch), and a status line with the written paths and the first command to run.
Every error, from the panel or from write_launch, is a line naming its field, never a traceback."""
from __future__ import annotations

import html
import importlib
import importlib.util
import shlex
from pathlib import Path

import ipywidgets as W

from ftlab.errors import ConfigError, FtlabError
from ftlab.results import inside
from ftlab.widgets.hardware import layout_arguments

# where write_launch lives: ftlab.launch_files is torch-free; ftlab.distributed re-exports it but loads torch.
# Looked up when the button is pressed (both are being written beside this panel), so a panel still opens without
WRITERS = ("ftlab.launch_files", "ftlab.distributed")


def launch_writer():
    """ftlab's write_launch(cfg, folder, **layout, main_address=...), or None if this ftlab has none yet."""
    for name in WRITERS:
        if importlib.util.find_spec(name) is not None:
            writer = getattr(importlib.import_module(name), "write_launch", None)
            if writer is not None:
                return writer
    return None


def first_command(readme: str) -> str | None:
    """The first command a launch README shows (an indented or fenced code line), or None."""
    fenced = False
    for line in readme.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if line.strip() and (fenced or line.startswith("    ") or line.startswith("\t")):
            return line.strip()
    return None


class LaunchExport:
    def __init__(self, panel, style: dict, wide, main_address: str | None = None, folder: str | None = None):
        """panel: the ConfigPanel whose config and layout are written. `folder`: inside the panel's output root
        (default: the run folder's launch/, following the run folder until another folder is typed)."""
        self.panel = panel
        self.default_folder = self._default(panel.config)
        self.folder = W.Text(value=folder or self.default_folder, description="launch folder", style=style,
                             layout=wide(), tooltip=f"a folder inside {panel.output_root}/")
        self.main_address = W.Text(value=main_address or "", description="main address", style=style, layout=wide(),
                                   placeholder="IP or host name of machine 0")
        self.button = W.Button(description="export launch files", icon="download",
                               tooltip="write train.py, config.json, accelerate/DeepSpeed configs and a README")
        self.status = W.HTML()
        self.error: FtlabError | None = None
        self.written: dict | None = None   # {name: path} of the last export
        self.button.on_click(lambda _: self.export())
        self.widget = W.VBox([self.folder, self.main_address, W.HBox([self.button, self.status])])

    @staticmethod
    def _default(config) -> str:
        return str(Path(Path(config.output_dir).name) / "launch")

    def follow(self, config, num_machines) -> None:
        """The default folder follows the run folder; the address is shown only with several machines (or in
        error)."""
        new = self._default(config)
        if self.folder.value == self.default_folder and new != self.default_folder:
            self.folder.value = new
        self.default_folder = new
        shown = num_machines != 1 or (self.error is not None and self.error.field == "main_address")
        self.main_address.layout.display = None if shown else "none"

    def _target(self) -> Path:
        try:
            return inside(self.panel.output_root, self.folder.value)
        except ConfigError as e:  # inside() names output_dir: this is the launch folder
            raise ConfigError("launch_folder", self.folder.value, e.allowed) from None

    def export(self) -> dict | None:
        """Write the launch files; returns {name: path}, or None with the reason in the status line."""
        p = self.panel
        if p.error is not None:
            return self._fail(p.error, "Fix it in the panel first: ")
        writer = launch_writer()
        if writer is None:
            return self._fail(ConfigError("export", None, "a version of ftlab with write_launch "
                                          "(ftlab.launch_files / ftlab.distributed)"))
        address = (self.main_address.value.strip() or None) if p.layout.num_machines > 1 else None
        try:
            folder = self._target()
            written = writer(p.config, folder, **layout_arguments(p.layout), main_address=address)
        except FtlabError as e:
            return self._fail(e)
        except OSError as e:  # a folder that cannot be written: shown on the folder field
            return self._fail(ConfigError("launch_folder", self.folder.value, f"a folder that can be written ({e})"))
        self.error, self.written = None, written
        readme = Path(written["README.md"]).read_text() if "README.md" in written else ""
        command = first_command(readme)
        self.status.value = ("<span style='color:#2e7d32'>✓ wrote " + ", ".join(
            f"<code>{html.escape(str(path))}</code>" for path in written.values()) + "</span>" + (
            f"<br>then: <code>cd {html.escape(shlex.quote(str(folder)))} &amp;&amp; {html.escape(command)}</code>" if command
            else ""))
        return written

    def _fail(self, error: FtlabError, prefix: str = "") -> None:
        self.error, self.written = error, None
        self.status.value = (f"<span style='color:#b00020'>⚠ {html.escape(prefix)}<b>{html.escape(str(error.field))}"
                             f"</b>: {html.escape(str(error))}</span>")
        self.follow(self.panel.config, self.panel.hardware["num_machines"].value)
        return None


__all__ = ["LaunchExport", "first_command", "launch_writer"]
