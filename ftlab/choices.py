"""The allowed values of a set-up's fields that are not methods (those are rows of ftlab.method_table): bit
widths, 4-bit codes, optimizers, LoRA's target shortcuts. One place, imported by the config, the calculator,
the loader and the panel alike."""

BITS = (32, 16, 8, 4)
QUANT_TYPES = ("nf4", "fp4")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "sgd")
TRAINERS = ("trl", "plain")  # the calculator: TRL's SFTTrainer (bf16 autocast, fused head) or a plain loop
TARGET_SHORTCUTS = {  # LoRA target presets, by the names Llama-style models use
    "q": ["q_proj"],
    "q,v": ["q_proj", "v_proj"],
    "q,k,v,o": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": "all-linear",
}
# a Llama-style block's linear layers: what "all-linear" means to the calculator (peft leaves the LM head out)
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# How a run is spread over several GPUs (ftlab.layout): plain data parallel, DeepSpeed's ZeRO stages, and
# FSDP2's full shard (as ZeRO-3) and shard-gradients-and-optimizer (as ZeRO-2)
STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp_grad_op")
