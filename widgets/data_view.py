"""What DataPanel shows of valid data: examples as the model sees them (the loss tokens marked, what seq_len
cuts struck through), the histogram of token lengths with seq_len marked, and the counts line."""
from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ftlab.widgets import figures  # new_figure, refresh

LOSS = "background:#c8e6c9;color:#1b5e20;font-weight:bold"  # the tokens the loss is on
CUT = "color:#9e9e9e;text-decoration:line-through"  # past seq_len: cut by the trainer
BOX = "white-space:pre-wrap;font-family:monospace;font-size:12px;border:1px solid #ddd;padding:6px;margin:4px 0"


def preview_html(tokenizer, tokenized: list[tuple[list[int], int]], seq_len: int) -> str:
    """Each (ids, prompt tokens) decoded in three parts: the prompt (no loss), the completion's tokens within
    seq_len (bold on green: they carry the loss), and the tokens past seq_len (struck through: cut)."""
    parts = []
    for k, (ids, prompt) in enumerate(tokenized, start=1):
        kept = min(len(ids), seq_len)
        spans = [("", ids[:min(prompt, kept)]), (LOSS, ids[prompt:kept]), (CUT, ids[kept:])]
        body = "".join(_span(style, tokenizer.decode(part, skip_special_tokens=False))
                       for style, part in spans if part)
        parts.append(f"<div style='color:#555'>example {k}: {len(ids)} tokens, {max(0, kept - prompt)} carry the "
                     f"loss{f', {len(ids) - kept} past seq_len={seq_len} are cut' if len(ids) > kept else ''}</div>"
                     f"<div style='{BOX}'>{body}</div>")
    legend = (f"<span style='{LOSS}'>loss tokens</span> · the rest is context (no loss) · "
              f"<span style='{CUT}'>cut at seq_len</span>")
    return f"<b>As the model sees them</b> ({legend})" + "".join(parts)


def _span(style: str, text: str) -> str:
    text = html.escape(text, quote=False)
    return f"<span style='{style}'>{text}</span>" if style else text


def histogram(lengths: list[int], bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the token lengths: at most `bins` bins of whole tokens."""
    lo, hi = min(lengths), max(lengths)
    edges = np.unique(np.linspace(lo, hi + 1, min(bins, hi + 1 - lo) + 1).round())
    counts, edges = np.histogram(lengths, bins=edges)
    return counts, edges


def new_figure():
    """The histogram's figure (a FigureWidget, or a go.Figure with static figures: ftlab.widgets.figures)."""
    return figures.new_figure(go.Figure(
        data=[go.Bar(x=[], y=[], marker_color="#5c6bc0", name="examples")],
        layout=dict(title="Tokens an example (prompt + completion, chat template applied)", xaxis_title="tokens",
                    yaxis_title="examples", height=300, bargap=0.05, margin=dict(t=40, b=40, l=50, r=20))))


def draw(figure, counts: np.ndarray, edges: np.ndarray, seq_len: int) -> None:
    """The bars in place, and seq_len as a dashed red line."""
    with figure.batch_update():
        bar = figure.data[0]
        bar.x, bar.y, bar.width = (edges[:-1] + edges[1:]) / 2, counts, np.diff(edges)
        figure.layout.shapes = [dict(type="line", x0=seq_len, x1=seq_len, yref="paper", y0=0, y1=1,
                                     line=dict(color="#b00020", dash="dash"))]
        figure.layout.annotations = [dict(x=seq_len, yref="paper", y=1, text=f"seq_len={seq_len}",
                                          showarrow=False, xanchor="left", font=dict(color="#b00020"))]
    figures.refresh(figure)


def counts_line(report: dict, seq_len: int) -> str:
    """"N of M examples are longer than seq_len: K would be cut, J dropped (the prompt alone fills it)"."""
    r = report
    if not r["longer"]:
        return f"all {r['examples']} examples fit in seq_len={seq_len}"
    return (f"{r['longer']} of {r['examples']} examples are longer than seq_len={seq_len}: {r['cut']} would be cut "
            f"(the end of the completion lost), {r['dropped']} dropped (the prompt alone fills it)")
