"""The calculator per GPU (ftlab.memory_sharding, ftlab.layout, ftlab.scale_out): the ZeRO arithmetic, its
agreement with DeepSpeed's own estimators, and the bad inputs."""
import os

import pytest

from ftlab import TrainConfig
from ftlab.errors import ConfigError
from ftlab.memory import GIB, estimate_memory, max_batch_size
from ftlab.memory_sharding import largest_layer
from ftlab.models import resolve_arch
from ftlab.scale_out import cheapest_fit

STATES = ("weights", "adapters", "gradients", "optimizer")
FULL = dict(method="full", gradient_checkpointing=True, batch_size=1, seq_len=512)


def states(est, with_gathered=False) -> float:
    """Model states of one GPU, in bytes."""
    keys = STATES + (("gathered",) if with_gathered else ())
    return sum(est.components.get(k, 0.0) for k in keys) * GIB


def test_one_gpu_ddp_is_the_single_gpu_estimate():
    for method in ("lora", "full", "qlora", "prompt_tuning"):
        one = estimate_memory("smollm2-360m-instruct", method=method)
        same = estimate_memory("smollm2-360m-instruct", method=method, num_gpus=1, strategy="ddp")
        assert same.total_gib == one.total_gib and same.cpu_gib == 0.0


def test_ddp_holds_everything_on_every_gpu_plus_its_gradient_buckets():
    one = estimate_memory("llama-3.2-1b", **FULL)
    eight = estimate_memory("llama-3.2-1b", num_gpus=8, **FULL)
    for k in ("weights", "gradients", "optimizer"):
        assert eight.components[k] == one.components[k]
    assert eight.components["buckets"] == pytest.approx(one.components["weights"])  # bf16 gradients, once more


def test_zero3_model_states_fall_as_one_over_n_and_zero2_keeps_the_weights_whole():
    by_n = {n: estimate_memory("llama-3.1-8b", num_gpus=n, strategy="zero3", **FULL) for n in (1, 2, 4, 8)}
    for n, est in by_n.items():  # everything but the gathered layer is split n ways
        assert states(est) * n == pytest.approx(states(by_n[1]), rel=1e-9)
        assert est.components["gathered"] == by_n[1].components["gathered"] > 0
        assert est.components["activations"] == by_n[1].components["activations"]  # the batch is per GPU
    z2 = {n: estimate_memory("llama-3.1-8b", num_gpus=n, strategy="zero2", **FULL) for n in (1, 8)}
    assert z2[8].components["weights"] == z2[1].components["weights"] == pytest.approx(2 * 8.03e9 / GIB, rel=0.01)
    assert z2[8].components["optimizer"] * 8 == pytest.approx(z2[1].components["optimizer"])


def test_lora_base_is_whole_under_zero2_and_split_under_zero3_and_fsdp():
    kw = dict(method="lora", gradient_checkpointing=True)
    one = estimate_memory("llama-3.1-8b", strategy="zero2", **kw).components["weights"]
    assert estimate_memory("llama-3.1-8b", num_gpus=8, strategy="zero2", **kw).components["weights"] == one
    for s in ("zero3", "fsdp"):
        assert estimate_memory("llama-3.1-8b", num_gpus=8, strategy=s, **kw).components["weights"] * 8 == \
            pytest.approx(one)


def test_the_paper_ordering_holds_for_full_fine_tuning_of_an_8b_model_on_8_gpus():
    totals = [states(estimate_memory("llama-3.1-8b", num_gpus=8, strategy=s, **FULL), True)
              for s in ("ddp", "zero1", "zero2", "zero3")]
    assert totals == sorted(totals, reverse=True)


@pytest.fixture(scope="module")
def ds_estimators():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # this machine has no GPU: DeepSpeed's CPU accelerator
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    return estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs


@pytest.mark.parametrize("gpus,machines", [(1, 1), (2, 1), (8, 1), (4, 2)])
def test_model_states_equal_deepspeeds_own_estimators(ds_estimators, gpus, machines):
    """Full fine-tuning with AdamW: DeepSpeed counts 2 bytes (bf16 weight) + 18/N (bf16 and fp32 gradient, fp32
    master, two fp32 moments) under ZeRO-2, 18/N + 4 × the largest layer under ZeRO-3; its CPU figures carry a
    1.5× buffer factor (additional_buffer_factor) that ours leave out, so ours × 1.5 must equal theirs."""
    zero2, zero3 = ds_estimators
    arch = resolve_arch("llama-3.1-8b")
    psi, big = arch.n_params, largest_layer(arch)
    kw = dict(num_gpus=gpus, num_machines=machines, **FULL)
    z2 = estimate_memory(arch, strategy="zero2", **kw)
    assert states(z2) == pytest.approx(zero2(psi, gpus, machines, cpu_offload=False)[1], rel=1e-6)
    z2o = estimate_memory(arch, strategy="zero2", offload_optimizer=True, **kw)
    cpu, gpu = zero2(psi, gpus, machines, cpu_offload=True)
    assert states(z2o) == pytest.approx(gpu, rel=1e-6)
    if 16 >= 4 * gpus * machines:  # DeepSpeed takes the larger of 16Ψ and 4Ψ a process (loading the model)
        assert z2o.cpu_gib * GIB * 1.5 == pytest.approx(cpu, rel=1e-6)
    z3 = estimate_memory(arch, strategy="zero3", **kw)
    assert states(z3, True) == pytest.approx(zero3(psi, big, gpus, machines, cpu_offload=False)[1], rel=1e-6)
    for params in (False, True):
        est = estimate_memory(arch, strategy="zero3", offload_optimizer=True, offload_params=params, **kw)
        cpu, gpu, _ = zero3(psi, big, gpus, machines, cpu_offload=True, cpu_offload_params=params, zero_init=True)
        assert states(est, True) == pytest.approx(gpu, rel=1e-6)
        assert est.cpu_gib * GIB * 1.5 == pytest.approx(cpu, rel=1e-6)


def test_cheapest_fit_70b_full_fine_tuning_on_8_a100s_needs_zero3_with_the_optimizer_on_the_cpu():
    plan = cheapest_fit("llama-3.1-70b", "full", "A100-80GB", 8, gradient_checkpointing=True, batch_size=1)
    assert plan.found and (plan.strategy, plan.offload_optimizer, plan.offload_params) == ("zero3", True, False)
    assert [t[2] for t in plan.tried] == [False] * 4 + [True]
    assert 1000 < plan.cpu_gib < 1100  # 16 bytes a parameter of 70.6 B, on the one machine's CPU
    assert "ZeRO-3 with the optimizer on the CPU fits 8 × A100-80GB" in str(plan)
    small = cheapest_fit("llama-3.1-8b", "lora", "A100-80GB", 2, gradient_checkpointing=True)
    assert small.strategy == "ddp" and len(small.tried) == 1
    none = cheapest_fit("llama-3.1-70b", "full", "T4", 2, gradient_checkpointing=True, batch_size=1, cpu_gib=512)
    assert not none.found and "nothing fits 2 × T4" in str(none)
    eight_bit = cheapest_fit("llama-3.1-8b", "lora", "T4", 2, bits=8, gradient_checkpointing=True)
    assert not eight_bit.found and "int8 weights cannot be split" in eight_bit.tried[-1][2]


def test_max_batch_size_takes_the_layout():
    assert max_batch_size("llama-3.1-8b", "A100-40GB", method="full", gradient_checkpointing=True) == 0
    assert max_batch_size("llama-3.1-8b", "A100-40GB", method="full", gradient_checkpointing=True, num_gpus=8,
                          strategy="zero3") >= 8


def test_a_train_config_takes_the_layout_beside_it():
    cfg = TrainConfig(model="llama-3.1-8b", method="full", gpu="A100-40GB", gradient_checkpointing=True)
    assert not estimate_memory(cfg).fits
    assert estimate_memory(cfg, num_gpus=8, strategy="zero3").fits
    with pytest.raises(ConfigError, match="lora_r"):
        estimate_memory(cfg, lora_r=4, num_gpus=8)


@pytest.mark.parametrize("kw,field", [
    (dict(num_gpus=0), "num_gpus"), (dict(num_gpus=2.0), "num_gpus"), (dict(num_gpus="2"), "num_gpus"),
    (dict(num_gpus=True), "num_gpus"), (dict(num_machines=0), "num_machines"), (dict(strategy="zero4"), "strategy"),
    (dict(strategy="ZeRO3"), "strategy"), (dict(offload_optimizer=True), "offload_optimizer"),
    (dict(offload_params=True, strategy="zero2"), "offload_params"),
    (dict(offload_optimizer=True, strategy="fsdp"), "offload_optimizer"),
    (dict(offload_optimizer="yes", strategy="zero3"), "offload_optimizer"),
    (dict(strategy="fsdp", bits=8), "strategy"), (dict(strategy="zero3", bits=8), "strategy"),
    (dict(method="inference", num_gpus=2), "num_gpus"), (dict(num_gpu=2), "num_gpu"),
    (dict(num_gpus=65), "num_gpus"), (dict(num_machines=10**5), "num_machines"),
    (dict(strategy="zero2", offload_optimizer=True, optimizer="paged_adamw_8bit"), "optimizer"),
    (dict(strategy="fsdp", offload_params=True, optimizer="adamw_8bit"), "optimizer"),
])
def test_bad_layouts_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        estimate_memory("smollm2-135m-instruct", **kw)
    assert e.value.field == field


def test_cheapest_fit_refuses_what_it_chooses_itself_and_a_bad_engine():
    with pytest.raises(ConfigError, match="strategy"):
        cheapest_fit("llama-3.1-8b", "lora", "T4", 2, strategy="zero3")
    with pytest.raises(ConfigError, match="engine"):
        cheapest_fit("llama-3.1-8b", "lora", "T4", 2, engine="megatron")
    with pytest.raises(ConfigError, match="num_gpus"):
        cheapest_fit("llama-3.1-8b", "lora", "T4", 0)


def test_no_part_is_negative_for_a_mixture_of_experts_at_4_bits():
    """The experts multiply the MLP only: counting the attention once per expert made the rest negative."""
    for strategy in ("ddp", "zero1", "zero3", "fsdp"):
        est = estimate_memory("mixtral-8x7b", method="qlora", num_gpus=2, strategy=strategy)
        assert min(est.components.values()) >= 0, (strategy, est)
    single = estimate_memory("mixtral-8x7b", method="qlora").components["weights"]
    assert 0.5 * 46.7e9 / GIB < single < 0.6 * 46.7e9 / GIB  # about half a byte a weight


def test_a_32_bit_base_is_computed_in_bf16_under_the_sharded_engines():
    for strategy in ("zero2", "zero3", "fsdp"):
        e32 = estimate_memory("llama-3.1-8b", method="lora", bits=32, num_gpus=2, strategy=strategy)
        e16 = estimate_memory("llama-3.1-8b", method="lora", bits=16, num_gpus=2, strategy=strategy)
        assert e32.components["activations"] == e16.components["activations"]
    # FSDP keeps frozen weights as loaded (fp32 here), DeepSpeed casts them to bf16
    fsdp32 = estimate_memory("llama-3.1-8b", method="lora", bits=32, num_gpus=2, strategy="fsdp")
    fsdp16 = estimate_memory("llama-3.1-8b", method="lora", num_gpus=2, strategy="fsdp")
    assert fsdp32.components["weights"] == pytest.approx(2 * fsdp16.components["weights"])
    assert estimate_memory("llama-3.1-8b", method="lora", bits=32, num_gpus=2, strategy="zero3").components[
        "weights"] == estimate_memory("llama-3.1-8b", method="lora", num_gpus=2, strategy="zero3").components["weights"]


def test_cheapest_fit_takes_a_train_config_and_says_when_the_cpu_is_the_limit():
    cfg = TrainConfig(model="llama-3.1-8b", method="full", gpu="A100-40GB", gradient_checkpointing=True)
    plan = cheapest_fit(cfg, num_gpus=8)
    assert plan.found and plan.gpu == "A100-40GB"
    assert plan.estimate.total_gib == estimate_memory(cfg, num_gpus=8, strategy=plan.strategy,
                                                      offload_optimizer=plan.offload_optimizer).total_gib
    for kw in (dict(method="lora"), dict(gpu="T4"), dict(batch_size=2)):
        with pytest.raises(ConfigError) as e:
            cheapest_fit(cfg, num_gpus=2, **kw)
        assert e.value.field == next(iter(kw))
    with pytest.raises(ConfigError) as e:
        cheapest_fit("llama-3.1-8b")
    assert e.value.field == "gpu"
    limited = cheapest_fit("llama-3.1-70b", "full", "A100-80GB", 8, cpu_gib=100.0, batch_size=1,
                           gradient_checkpointing=True)
    assert not limited.found and "more than cpu_gib=100" in str(limited)


def test_the_estimate_names_a_layout_other_than_one_gpu_with_ddp():
    assert "zero3 on 1 GPU" in str(estimate_memory("smollm2-135m-instruct", strategy="zero3"))
    assert "per GPU" not in str(estimate_memory("smollm2-135m-instruct"))
