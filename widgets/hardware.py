"""The panel's hardware group: how many GPUs on how many machines, the strategy that spreads a run over them and
what it offloads to the CPU (an ftlab.layout.Layout, not TrainConfig fields), and the readout lines they add:
the estimate per GPU, the CPU memory a machine holds, the effective batch, and a cheaper layout that fits."""
from __future__ import annotations

import html

import ipywidgets as W

from ftlab.choices import STRATEGIES
from ftlab.errors import FtlabError
from ftlab.layout import FSDP, LAYOUT_DEFAULTS, ZERO, Layout
from ftlab.memory import max_batch_size, max_seq_len
from ftlab.memory_setup import setup_arguments
from ftlab.scale_out import cheapest_fit, describe

LAYOUT_FIELDS = tuple(LAYOUT_DEFAULTS)  # num_gpus, strategy, offload_optimizer, offload_params, num_machines
# which strategies can offload what (ftlab.layout.Layout.build says why the others cannot)
OFFLOADS_OPTIMIZER = tuple(ZERO)                      # every ZeRO stage; FSDP offloads it with the weights only
OFFLOADS_PARAMS = ("zero3", *FSDP)


def hardware_fields(layout: Layout, style: dict, wide) -> dict:
    """One widget per Layout field, keyed by the field's name (a ConfigError's .field finds its widget)."""
    return {
        "num_gpus": W.IntText(value=layout.num_gpus, description="GPUs", style=style, layout=wide(),
                              tooltip="GPUs on each machine"),
        "num_machines": W.IntText(value=layout.num_machines, description="machines", style=style, layout=wide()),
        "strategy": W.Dropdown(value=layout.strategy, options=[(describe(s), s) for s in STRATEGIES],
                               description="strategy", style=style, layout=wide()),
        "offload_optimizer": W.Checkbox(value=layout.offload_optimizer, description="offload optimizer (to the CPU)",
                                        style=style, indent=False, layout=wide()),
        "offload_params": W.Checkbox(value=layout.offload_params, description="offload weights (to the CPU)",
                                     style=style, indent=False, layout=wide()),
    }


def hidden_hardware(values: dict) -> set:
    """The hardware fields that mean nothing for the values shown: the strategy and offloading on one plain GPU,
    and each offload box where the strategy cannot offload that."""
    hidden = set()
    if values["num_gpus"] == 1 and values["num_machines"] == 1 and values["strategy"] == "ddp":
        hidden.add("strategy")
    if values["strategy"] not in OFFLOADS_OPTIMIZER or "strategy" in hidden:
        hidden.add("offload_optimizer")
    if values["strategy"] not in OFFLOADS_PARAMS or "strategy" in hidden:
        hidden.add("offload_params")
    return hidden


def layout_arguments(layout: Layout) -> dict:
    """The keywords estimate_memory, cheapest_fit's settings and write_launch take for a layout."""
    return {k: getattr(layout, k) for k in LAYOUT_FIELDS}


def where(layout: Layout) -> str:
    """'2 GPUs', '2 GPUs × 3 machines'."""
    text = f"{layout.num_gpus} GPU" + ("s" if layout.num_gpus > 1 else "")
    return text + (f" × {layout.num_machines} machines" if layout.num_machines > 1 else "")


def effective_batch(batch_size: int, layout: Layout) -> str:
    """'effective batch 4 × 2 GPUs = 8 sequences a step' (each GPU takes batch_size sequences)."""
    return f"effective batch {batch_size} × {where(layout)} = {batch_size * layout.world} sequences a step"


def title(layout: Layout, total_gib: float) -> tuple[str, str]:
    """The readout's headline (bold) and what it is about: per GPU on several GPUs or with a strategy."""
    if layout.world == 1 and layout.strategy == "ddp":
        return f"Estimated GPU memory: {total_gib:.2f} GiB", ""
    name = describe(layout.strategy, layout.offload_optimizer, layout.offload_params)
    return f"Estimated GPU memory per GPU: {total_gib:.2f} GiB", f" ({name} on {where(layout)})"


def scale_lines(config, layout: Layout, estimate) -> list[str]:
    """The readout's lines on the layout (HTML): CPU memory when offloading, the effective batch on several GPUs,
    and when the set-up does not fit, the cheapest layout on this many GPUs that would."""
    lines = []
    if layout.offloads:
        lines.append(f"CPU memory a machine: {estimate.cpu_gib:.1f} GiB (what offloading keeps there)")
    if layout.world > 1:
        lines.append(effective_batch(config.batch_size, layout))
    if layout != Layout():  # the panel's Run trains in this notebook's one process
        lines.append("Run trains here, in one process; for this layout export the launch files below "
                     "(or start a function with ftlab.distributed.launch_in_notebook)")
    lines.append(html.escape(limits(config, layout)))
    if not estimate.fits:
        lines.append(html.escape(fit_hint(config, layout)))
    return lines


def limits(config, layout: Layout) -> str:
    """'largest batch that fits at 256 tokens: 37 · longest sequence at batch 4: 2,048' on the target GPU."""
    settings = setup_arguments(config)
    gpu = settings.pop("gpu")
    kw = {**settings, **layout_arguments(layout)}
    batch = max_batch_size(config.model, gpu, **{k: v for k, v in kw.items() if k != "batch_size"})
    seq = max_seq_len(config.model, gpu, **{k: v for k, v in kw.items() if k != "seq_len"})
    each = " a GPU" if layout.world > 1 else ""
    return (f"on {gpu}: largest batch{each} that fits at {config.seq_len} tokens: {batch:,} · longest sequence "
            f"that fits at batch {config.batch_size}: {seq:,} tokens" if batch else
            f"on {gpu}: not even one sequence of {config.seq_len} tokens fits{each}")


def fit_hint(config, layout: Layout) -> str:
    """'would fit: ZeRO-3 fits 8 × A100-80GB: ...' (cheapest_fit on the current GPU count), or why nothing does."""
    settings = setup_arguments(config)
    method, gpu = settings.pop("method"), settings.pop("gpu")
    engine = "fsdp" if layout.strategy in FSDP else "deepspeed"
    try:
        plan = cheapest_fit(config.model, method, gpu, layout.num_gpus, num_machines=layout.num_machines,
                            engine=engine, **settings)
    except FtlabError as e:  # a set-up the ladder cannot try: say so rather than nothing
        return f"no cheaper layout found: {e}"
    return f"would fit: {plan}" if plan.found else str(plan)


__all__ = ["LAYOUT_FIELDS", "effective_batch", "fit_hint", "hardware_fields", "hidden_hardware", "layout_arguments",
           "scale_lines", "title", "where"]
