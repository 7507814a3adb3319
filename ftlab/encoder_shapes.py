"""What each method trains and saves on a BERT-style encoder with a classification head: the architecture's numbers
(EncoderArch, from a config) and one function per kind of method, which the method table's rows name (their
`encoder` field) and ftlab.memory_encoder adds up. Counts follow transformers' BertForSequenceClassification /
RobertaForSequenceClassification and peft 0.21 (tests/test_memory_encoder.py checks them against both).

Saved floats (what autograd keeps for backward in a training forward, fp32) were read from the tensors saved,
counted with torch's saved_tensors_hooks (scripts/measure_encoder_memory.py), h hidden, I intermediate, r rank:
    a frozen block (BitFit; the base of a LoRA or IA3 block)      7h + I + 4 a token
    every linear layer's input saved (full, top-k's trained blocks) 10h + 2I + 4 a token
    LoRA: the frozen block, each adapted layer's distinct input (q, k, v share one) and r a layer
    IA3: as full, plus 3h + I a block whatever the tokens
    attention scores: three batch × heads × seq² tensors a block (sdpa's math path: scores, softmax, dropout)
    the embeddings: 3h a token when they train (full), 2h with BitFit (their LayerNorm's bias), else none counted
"""
from __future__ import annotations

from dataclasses import dataclass

from ftlab.errors import ConfigError, check_int, check_strings

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
# one block's linear layers, by their name under encoder.layer.N (the names peft's target_modules match)
BLOCK_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense")
# peft 0.21's IA3 defaults for BERT and RoBERTa: which layers it scales, and which of them on the input side
IA3_TARGETS, IA3_FEEDFORWARD = ("key", "value", "output.dense"), ("output.dense",)


@dataclass(frozen=True)
class EncoderSizes:
    num_labels: int
    lora_r: int = 16
    lora_targets: object = "all-linear"
    top_k_layers: int = 2


@dataclass(frozen=True)
class EncoderShape:
    trainable: int                 # parameters trained, the new head included (every method trains it)
    per_token: float               # floats a saving block keeps a token (attention scores apart)
    per_block: float = 0.0         # floats a saving block keeps whatever the tokens
    embeddings: float = 0.0        # floats the embeddings keep a token
    blocks: int | None = None      # how many blocks save (None: all)


@dataclass(frozen=True)
class EncoderArch:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    max_positions: int
    type_vocab: int
    model_type: str = "bert"

    @classmethod
    def from_config(cls, d: dict) -> "EncoderArch":
        need = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size",
                "max_position_embeddings")
        n = {k: check_int(f"model config's {k}", d.get(k), 1) for k in need}
        return cls(n["num_hidden_layers"], n["hidden_size"], n["intermediate_size"], n["num_attention_heads"],
                   n["vocab_size"], n["max_position_embeddings"],
                   check_int("model config's type_vocab_size", d.get("type_vocab_size", 2), 0), d["model_type"])

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of one block's linear layers."""
        h, i = self.hidden, self.intermediate
        return dict(zip(BLOCK_LINEARS, [(h, h)] * 4 + [(h, i), (i, h)]))

    def block_params(self) -> int:
        return sum(i * o + o for i, o in self.shapes().values()) + 2 * 2 * self.hidden  # + two LayerNorms

    def head_params(self, num_labels: int) -> int:
        """BERT's pooler and classifier, or RoBERTa's classification head: h×h + h, then h×n + n."""
        return self.hidden * self.hidden + self.hidden + self.hidden * num_labels + num_labels

    def embedding_params(self) -> int:
        return (self.vocab + self.max_positions + self.type_vocab) * self.hidden + 2 * self.hidden

    def n_params(self, num_labels: int) -> int:
        return self.embedding_params() + self.layers * self.block_params() + self.head_params(num_labels)

    def biases(self) -> int:
        """Every bias (linear layers and LayerNorms); the pooler's counted with the head."""
        return self.hidden + self.layers * (sum(o for _, o in self.shapes().values()) + 2 * self.hidden)


def is_encoder_config(d: dict) -> bool:
    return isinstance(d, dict) and d.get("model_type") in ENCODER_TYPES and not d.get("is_decoder")


def _matches(name: str, targets) -> bool:
    """peft's rule for a list of target_modules: the full name, or its ending after a dot."""
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_layers(arch: EncoderArch, targets) -> dict[str, tuple[int, int]]:
    """The block's layers LoRA adapts ("all-linear": every linear layer but the head's, the pooler included)."""
    if targets == "all-linear":
        return arch.shapes()
    if isinstance(targets, str):  # the decoders' shortcuts ("q,v") name Llama's modules, not an encoder's
        raise ConfigError("lora_targets", targets, "'all-linear' or a list of an encoder block's module names, such "
                          "as ['query', 'value']")
    targets = check_strings("lora_targets", targets)
    hit = {n: s for n, s in arch.shapes().items() if _matches(n, targets)}
    if not hit:
        names = sorted({n.rsplit(".", 1)[-1] for n in BLOCK_LINEARS})
        raise ConfigError("lora_targets", targets, f"module names of a {arch.model_type} block: {names} ('dense' "
                          "is attention's output, both MLP layers and BERT's pooler)")
    return hit


def _classifier(a: EncoderArch, z: EncoderSizes) -> int:
    """The new head's parameters: BERT's classifier (its pooler is pretrained), RoBERTa's whole head."""
    n = z.num_labels
    return a.hidden * n + n if a.model_type == "bert" else a.head_params(n)


FROZEN = (7, 1, 4)   # a frozen block's saved floats a token: 7h + I + 4
EVERY = (10, 2, 4)   # every linear input saved: 10h + 2I + 4


def _floats(a: EncoderArch, k: tuple) -> float:
    return k[0] * a.hidden + k[1] * a.intermediate + k[2]


def enc_all(a: EncoderArch, z: EncoderSizes) -> EncoderShape:
    return EncoderShape(a.n_params(z.num_labels), _floats(a, EVERY), embeddings=3 * a.hidden)


def enc_low_rank(a: EncoderArch, z: EncoderSizes) -> EncoderShape:
    layers = lora_layers(a, z.lora_targets)
    pooled = z.lora_targets == "all-linear" or "dense" in z.lora_targets  # BERT's pooler is a `dense` too
    pooler = z.lora_r * 2 * a.hidden if pooled and a.model_type == "bert" else 0
    n = a.layers * sum(z.lora_r * (i + o) for i, o in layers.values()) + pooler + _classifier(a, z)
    inputs = {"attention.self": a.hidden, "attention.output.dense": a.hidden, "intermediate.dense": a.hidden,
              "output.dense": a.intermediate}
    saved = sum(size for where, size in inputs.items() if any(m.startswith(where) for m in layers))
    return EncoderShape(n, _floats(a, FROZEN) + saved + z.lora_r * len(layers))


def enc_ia3(a: EncoderArch, z: EncoderSizes) -> EncoderShape:
    per = sum(i if _matches(name, IA3_FEEDFORWARD) else o for name, (i, o) in a.shapes().items()
              if _matches(name, IA3_TARGETS))
    return EncoderShape(a.layers * per + _classifier(a, z), _floats(a, EVERY), per_block=3 * a.hidden + a.intermediate)


def enc_biases(a: EncoderArch, z: EncoderSizes) -> EncoderShape:
    pooler = a.hidden if a.model_type == "bert" else 0
    return EncoderShape(a.biases() + pooler + _classifier(a, z), _floats(a, FROZEN), embeddings=2 * a.hidden)


def enc_top_k(a: EncoderArch, z: EncoderSizes) -> EncoderShape:
    k = check_int("top_k_layers", z.top_k_layers, 1, a.layers)
    return EncoderShape(k * a.block_params() + _classifier(a, z), _floats(a, EVERY), blocks=k)
