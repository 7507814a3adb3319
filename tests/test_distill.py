"""Distillation (ftlab.distill): the student made from the teacher's layers, the comparison numbers, and
token-level distillation through TRL's GKDTrainer with the temperature applied."""
import pytest
import torch

from ftlab import distill
from ftlab.config import TrainConfig
from ftlab.data import load_records, to_prompt_completion
from ftlab.models import tiny_test_model


@pytest.fixture
def teacher(tokenizer):
    torch.manual_seed(0)
    return tiny_test_model(tokenizer, layers=4).eval()


def records(n):
    return to_prompt_completion(load_records("definitions", "train", n=n))


def test_shrink_keeps_evenly_spaced_blocks_and_shares_the_rest(teacher, tokenizer):
    student = distill.shrink(teacher, 2)
    assert student.ftlab_kept_layers == [0, 3] and student.config.num_hidden_layers == 2
    assert len(student.model.layers) == 2 and teacher.config.num_hidden_layers == 4  # the teacher is untouched
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert [b.self_attn.layer_idx for b in student.model.layers] == [0, 1]
    ids = tokenizer("a dog", return_tensors="pt")
    assert student.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3


def test_shrink_of_a_model_whose_forward_a_trainer_patched_runs_its_own_blocks(teacher, tokenizer):
    """TRL's SFTTrainer sets model.forward to a closure over the original forward; a deep copy kept calling the
    teacher (seen in lab 09: the student's loss had no gradient)."""
    import types
    original = teacher.forward
    teacher.forward = types.MethodType(lambda self, *a, **k: original(*a, **k), teacher)
    student = distill.shrink(teacher, 1).requires_grad_(True)
    ids = tokenizer("a dog", return_tensors="pt")
    out = student(**ids).logits
    assert out.requires_grad and not torch.allclose(out, teacher(**ids).logits)


def test_shrink_refuses_impossible_layers(teacher):
    with pytest.raises(ValueError, match="keep=5 is not allowed: between 1 and the teacher's 4 layers"):
        distill.shrink(teacher, 5)
    with pytest.raises(ValueError, match=r"keep=\[0, 9\] is not allowed"):
        distill.shrink(teacher, [0, 9])


def test_against_teacher_of_the_teacher_itself(teacher, tokenizer):
    same = distill.against_teacher(teacher, teacher, tokenizer, records(3))
    assert same["kl_to_teacher"] == pytest.approx(0, abs=1e-6) and same["top1_agreement"] == 1.0
    from ftlab.evaluation import completion_loss
    assert same["loss"] == pytest.approx(completion_loss(teacher, tokenizer, records(3)), rel=1e-5)
    other = distill.against_teacher(distill.shrink(teacher, 1), teacher, tokenizer, records(3))
    assert other["kl_to_teacher"] > 0


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_token_kd_brings_the_student_closer_to_the_teacher(teacher, tokenizer, tmp_path, temperature):
    with torch.no_grad():  # a random tiny teacher is nearly uniform: sharpen it so there is something to match
        teacher.lm_head.weight.mul_(20)
    torch.manual_seed(1)
    student = tiny_test_model(tokenizer, layers=1)
    data = records(8)
    before = distill.against_teacher(student, teacher, tokenizer, data)["kl_to_teacher"]
    teacher_weights = {n: p.clone() for n, p in teacher.named_parameters()}
    cfg = TrainConfig(method="full", max_steps=6, batch_size=4, seq_len=64, learning_rate=2e-3,
                      output_dir=str(tmp_path))
    result, student = distill.train_token_kd(student, teacher, tokenizer, data, cfg, temperature=temperature)
    assert result.steps == 6 and len(result.losses) == 6
    assert distill.against_teacher(student, teacher, tokenizer, data)["kl_to_teacher"] < before
    assert all(torch.equal(p, teacher_weights[n]) for n, p in teacher.named_parameters())


def test_token_kd_loss_is_t_squared_kl_at_temperature(teacher, tokenizer, monkeypatch):
    """The override passes T to TRL's divergence and scales by T²; checked against the formula by hand."""
    from trl.experimental.gkd import GKDTrainer
    s_logits, t_logits = torch.randn(1, 5, 11), torch.randn(1, 5, 11)
    labels = torch.tensor([[-100, 1, 2, 3, 4]])
    fake = type("T", (distill._TemperatureGKD,), {"generalized_jsd_loss": staticmethod(GKDTrainer.generalized_jsd_loss),
                                                  "temperature": 2.0, "beta": 0.0})()
    fake.teacher_model = lambda **kw: type("O", (), {"logits": t_logits})()
    fake.teacher_model.eval = lambda: None
    student = lambda **kw: type("O", (), {"logits": s_logits})()
    ones = torch.ones(1, 5, dtype=torch.long)
    loss = fake.compute_loss(student, {"input_ids": ones, "attention_mask": ones, "labels": labels})
    p_t = (t_logits[:, :-1] / 2).softmax(-1)
    kl = (p_t * (p_t.log() - (s_logits[:, :-1] / 2).log_softmax(-1))).sum(-1)[labels[:, 1:] != -100].mean()
    assert loss.item() == pytest.approx(4 * kl.item(), rel=1e-5)


def test_bad_temperature_is_refused(teacher, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="temperature=0 is not allowed"):
        distill.train_token_kd(teacher, teacher, tokenizer, records(2), TrainConfig(output_dir=str(tmp_path)),
                               temperature=0)


def test_with_teacher_answers_replaces_only_the_completion(teacher, tokenizer):
    data = records(2)
    out = distill.with_teacher_answers(teacher, tokenizer, data, max_new_tokens=4)
    assert [o["prompt"] for o in out] == [d["prompt"] for d in data]
    assert all(o["completion"][0]["role"] == "assistant" for o in out)
