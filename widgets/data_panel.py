"""DataPanel: a user's own file of examples made ready for ftlab.train.finetune, seen before a run.

A path (or an uploaded file) is read; its columns are listed and mapped to prompt + completion, a chat column or
a text column (an obvious mapping is chosen for you); the first examples are shown as the model sees them, with
the tokens that carry the loss marked; a histogram of token lengths shows what seq_len would cut or drop; and
`panel.records()` gives (train, validation) records with a seeded split. A mistake (a bad line, a missing or empty
value, a split too small) is shown inline with its row, and the last valid data is kept.
"""
from __future__ import annotations

import html
import tempfile
from pathlib import Path

import ipywidgets as W
from IPython.display import display

from ftlab.errors import DataError, FtlabError, check_int
from ftlab.records import check_tokenizer
from ftlab.user_data import (TABLE_SUFFIXES, guess_columns, length_report, read_table, split_records, to_records,
                             tokenized)
from ftlab.widgets.data_view import counts_line, draw, histogram, new_figure, preview_html
from ftlab.widgets.figures import view

STYLE = {"description_width": "150px"}
MODE_OPTIONS = [("prompt + completion", "pair"), ("chat (messages column)", "messages"),
                ("plain text (language modelling)", "text")]
ROLES = ("prompt", "completion", "messages", "text")
SHOWN = {"pair": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}
PREVIEWED = 3


def _esc(text) -> str:  # element text only (never an attribute): quotes stay readable
    return html.escape(str(text), quote=False)


def _wide():
    return W.Layout(width="420px")


class DataPanel:
    def __init__(self, tokenizer, *, path=None, seq_len: int = 256, seed: int = 0, system_prompt: str = "",
                 validation_fraction: float = 0.1):
        """`tokenizer`: the model's (its chat template formats the examples); `path`: a .jsonl/.json/.csv/.parquet
        file to read at once. A wrong keyword raises ConfigError; everything after is shown inline."""
        self.tokenizer = check_tokenizer(tokenizer)
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.seed = check_int("seed", seed, 0)
        # the last valid state: what records() and the views are made from
        self.path: str | None = None
        self.columns: list[str] = []
        self.mapping: dict = {}
        self.examples: list[dict] = []
        self.lengths: list[tuple[int, int]] = []
        self.report: dict | None = None
        self.histogram = None  # (counts, edges)
        self._split: tuple[list, list] | None = None
        self._read: tuple[str, list[dict], list[str]] | None = None  # the file read last (maybe not mapped yet)
        self._tokens: list[tuple[list[int], int]] = []
        self.error: FtlabError | None = None
        self._quiet = False
        self._listeners = []
        self.fields = self._make_fields(path, seq_len, seed, system_prompt, validation_fraction)
        self.upload = W.FileUpload(accept=",".join(TABLE_SUFFIXES), multiple=False, description="upload")
        self.upload.observe(lambda change: self._uploaded(change["new"]), names="value")
        for name, w in self.fields.items():
            w.observe(lambda change, name=name: self._changed(name), names="value")
        self.found, self.message, self.summary, self.preview = W.HTML(), W.HTML(), W.HTML(), W.HTML()
        self.figure = new_figure()
        f = self.fields
        self.widget = W.VBox([W.HTML("<b>Your data</b>"), W.HBox([f["path"], self.upload]), self.found, f["mode"],
                              *(f[r] for r in ROLES), f["system_prompt"], f["seq_len"], f["validation_fraction"],
                              f["seed"], self.message, self.summary, view(self.figure), self.preview])
        if path is not None:
            self._changed("path")
        else:
            self._show()

    def _make_fields(self, path, seq_len, seed, system_prompt, fraction) -> dict:
        def column(role):
            return W.Dropdown(options=[("(choose)", None)], value=None, description=f"{role} column", style=STYLE,
                              layout=_wide())

        return {
            "path": W.Text(value="" if path is None else str(path), description="file", style=STYLE, layout=_wide(),
                           placeholder=f"~/data.jsonl ({', '.join(TABLE_SUFFIXES)})", continuous_update=False),
            "mode": W.Dropdown(options=MODE_OPTIONS, value="pair", description="examples are", style=STYLE,
                               layout=_wide()),
            **{role: column(role) for role in ROLES},
            "system_prompt": W.Textarea(value=system_prompt, description="system prompt", style=STYLE,
                                        layout=_wide(), placeholder="optional: put first in each chat",
                                        continuous_update=False),
            "seq_len": W.IntText(value=seq_len, description="seq_len", style=STYLE, layout=_wide()),
            "validation_fraction": W.FloatText(value=fraction, description="validation fraction", step=0.05,
                                               style=STYLE, layout=_wide()),
            "seed": W.IntText(value=seed, description="split seed", style=STYLE, layout=_wide()),
        }

    def on_change(self, callback) -> None:
        """callback(panel) after every change that left valid data (e.g. a set-up panel taking the file)."""
        self._listeners.append(callback)

    def records(self) -> tuple[list[dict], list[dict]]:
        """(train_records, val_records) of the last valid data, in the shape ftlab.train.finetune takes."""
        if self._split is None:
            raise DataError("no data yet: give a file (path or upload) and choose its columns"
                            + (f" ({self.error})" if self.error else ""), field="path")
        train, val = self._split
        return list(train), list(val)

    def _uploaded(self, files) -> None:
        """An uploaded file is written under its own name into a new temporary folder, then read as a typed path is
        (the summary, the run's record and the model card then name the file the user chose)."""
        if not files:
            return
        f = files[0]
        out = Path(tempfile.mkdtemp(prefix="ftlab-upload-")) / (Path(f["name"]).name or "upload")
        out.write_bytes(bytes(f["content"]))
        self.fields["path"].value = str(out)

    def _changed(self, name: str) -> None:
        if self._quiet:
            return
        try:
            # the path field's text is not the file in use (it failed to read): re-read it on any change, so its
            # error stays until the path is fixed instead of other fields quietly using the last file
            if name == "path" or self._read is None or self.fields["path"].value.strip() != self._read[0]:
                self._read_file()
            self._rebuild()
            self.error = None
        except FtlabError as e:
            self.error = e
        except Exception as e:  # any other failure also lands inline, never as a traceback
            self.error = DataError(f"{type(e).__name__}: {e}", field=name)
        self._show()
        if self.error is None:
            for callback in self._listeners:
                callback(self)

    def _read_file(self) -> None:
        """Read the file in the path field; its columns replace the dropdowns' options, an obvious mapping chosen
        (the current choice kept where the new file has that column)."""
        path = self.fields["path"].value.strip()
        if not path:
            raise DataError("give a file: type its path or upload it", field="path")
        rows, columns = read_table(path)
        self._read = (path, rows, columns)
        guess = guess_columns(columns)
        self._quiet = True
        try:
            for role in ROLES:
                w = self.fields[role]
                keep = w.value if w.value in columns else guess[role]
                w.options = [("(choose)", None)] + [(c, c) for c in columns]
                w.value = keep
            if self.fields[SHOWN[self.fields["mode"].value][0]].value is None:
                self.fields["mode"].value = guess["mode"]
        finally:
            self._quiet = False

    def _rebuild(self) -> None:
        """Everything from the widgets' values; committed only when all of it is valid."""
        path, rows, columns = self._read
        f = self.fields
        mapping = {"mode": f["mode"].value, **{role: f[role].value for role in SHOWN[f["mode"].value]}}
        examples = to_records(rows, mapping, f["system_prompt"].value)
        seq_len = check_int("seq_len", f["seq_len"].value, 1)
        split = split_records(examples, f["validation_fraction"].value, f["seed"].value)
        tokens = self._tokens if examples == self.examples else [tokenized(self.tokenizer, r) for r in examples]
        lengths = [(len(ids), prompt) for ids, prompt in tokens]
        report = length_report(lengths, seq_len)
        self.path, self.columns, self.mapping, self.examples, self.seq_len = path, columns, mapping, examples, seq_len
        self._tokens, self.lengths, self.report, self._split = tokens, lengths, report, split
        self.seed = f["seed"].value
        self.histogram = histogram([n for n, _ in lengths])

    def _show(self) -> None:
        f = self.fields
        for role in ROLES:
            shown = role in SHOWN[f["mode"].value] or (self.error is not None and self.error.field == role)
            f[role].layout.display = None if shown else "none"
        read = self._read
        self.found.value = (f"<span style='color:#555'>{_esc(Path(read[0]).name)}: {len(read[1])} rows; "
                            f"columns found: {', '.join(f'<code>{_esc(c)}</code>' for c in read[2])}</span>"
                            if read else "")
        self.message.value = (f"<span style='color:#b00020'>⚠ <b>{_esc(str(self.error.field))}</b>: "
                              f"{_esc(str(self.error))}</span>" if self.error else "")
        if self._split is None:
            self.summary.value = ""
            return
        train, val = self._split
        kept = " (the last valid data; fix the mistake above to use the new choice)" if self.error else ""
        self.summary.value = (f"<b>{_esc(Path(self.path).name)}</b>: {len(self.examples)} examples → "
                              f"{len(train)} train, {len(val)} validation (seed {self.seed}){kept}<br>"
                              f"{_esc(counts_line(self.report, self.seq_len))}")
        draw(self.figure, *self.histogram, self.seq_len)
        self.preview.value = preview_html(self.tokenizer, self._tokens[:PREVIEWED], self.seq_len)

    def _ipython_display_(self):
        display(self.widget)
