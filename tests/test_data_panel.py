import json
from datetime import datetime, timezone
import random

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from ftlab.config import TrainConfig
from ftlab.errors import DataError
from ftlab.train import check_run_arguments
from ftlab.widgets import DataPanel


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def pairs(n, long_every=0):
    """n prompt/completion pairs; every `long_every`-th prompt is long (400 words)."""
    return [{"question": ("word " * 400 if long_every and i % long_every == 0 else f"What is {i} + {i}?"),
             "answer": f"It is {2 * i}.", "id": i} for i in range(n)]


def test_columns_are_found_and_guessed_in_each_format(tokenizer, tmp_path):
    df = pd.DataFrame({"instruction": [f"say {i}" for i in range(6)], "output": [str(i) for i in range(6)]})
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "a.json").write_text(df.to_json(orient="records"))
    for name in ("a.csv", "a.parquet", "a.json"):
        panel = DataPanel(tokenizer, path=str(tmp_path / name))
        assert panel.error is None, panel.message.value
        assert panel.columns == ["instruction", "output"]
        assert "<code>instruction</code>, <code>output</code>" in panel.found.value
        assert panel.mapping == {"mode": "pair", "prompt": "instruction", "completion": "output"}
        train, val = panel.records()
        assert train[0]["completion"][0]["content"] == "0"  # a CSV number stays the text it was
    chat = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"yo {i}"}]}
            for i in range(5)]
    panel = DataPanel(tokenizer, path=write_jsonl(tmp_path / "c.jsonl", chat), system_prompt="Be brief.")
    assert panel.mapping == {"mode": "messages", "messages": "messages"}
    r = panel.records()[0][0]
    assert r["prompt"][0] == {"role": "system", "content": "Be brief."} and r["completion"][0]["role"] == "assistant"
    text = [{"text": f"line {i}"} for i in range(5)]
    panel = DataPanel(tokenizer, path=write_jsonl(tmp_path / "t.jsonl", text))
    assert panel.mapping == {"mode": "text", "text": "text"} and panel.records()[0][0] == {"text": "line 0"}


def test_preview_shows_the_chat_template_with_the_completion_as_the_loss_part(tokenizer, tmp_path):
    panel = DataPanel(tokenizer, path=write_jsonl(tmp_path / "d.jsonl", pairs(10)), system_prompt="Sys")
    html = panel.preview.value
    assert "&lt;|im_start|&gt;system\nSys&lt;|im_end|&gt;" in html and "What is 0 + 0?" in html
    # the loss span is exactly the completion's tokens, as TRL's completion-only loss marks them
    loss = "<span style='background:#c8e6c9;color:#1b5e20;font-weight:bold'>"
    assert loss + "It is 0.&lt;|im_end|&gt;\n</span>" in html
    assert html.count("example ") == 3 and "What is 3 + 3?" not in html
    panel.fields["mode"].value = "text"  # no text column in this file: inline, the preview kept
    assert "text" in panel.message.value and "It is 0." in panel.preview.value


def test_histogram_and_cut_and_dropped_counts_equal_a_direct_computation(tokenizer, tmp_path):
    rows = pairs(12, long_every=4) + [{"question": "short", "answer": "long " * 300, "id": 99}]
    panel = DataPanel(tokenizer, path=write_jsonl(tmp_path / "d.jsonl", rows), seq_len=128)
    lengths, dropped, cut = [], 0, 0
    for r in rows:
        prompt = [{"role": "user", "content": r["question"]}]
        # as ftlab.batches does it: the template as text, then tokens
        p = tokenizer(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": r["answer"]}],
                                                       tokenize=False), add_special_tokens=False)["input_ids"]
        assert full[:len(p)] == p
        lengths.append(len(full))
        dropped += len(full) > 128 and len(p) >= 128
        cut += len(full) > 128 and len(p) < 128
    assert [n for n, _ in panel.lengths] == lengths and (cut, dropped) == (1, 3)
    assert panel.report == {"examples": 13, "longer": 4, "cut": 1, "dropped": 3}
    counts, edges = panel.histogram
    assert counts.sum() == 13 and list(counts) == list(np.histogram(lengths, bins=edges)[0])
    assert list(panel.figure.data[0].y) == list(counts) and panel.figure.layout.shapes[0].x0 == 128
    assert "4 of 13 examples are longer than seq_len=128: 1 would be cut" in panel.summary.value
    assert "3 dropped (the prompt alone fills it)" in panel.summary.value
    panel.fields["seq_len"].value = 4096
    assert panel.report["longer"] == 0 and "all 13 examples fit" in panel.summary.value


def test_records_split_sizes_and_the_seed(tokenizer, tmp_path):
    panel = DataPanel(tokenizer, path=write_jsonl(tmp_path / "d.jsonl", pairs(20)), seed=3)
    train, val = panel.records()
    assert (len(train), len(val)) == (18, 2)
    again = DataPanel(tokenizer, path=str(tmp_path / "d.jsonl"), seed=3).records()
    assert again == (train, val)
    order = list(range(20))
    random.Random(3).shuffle(order)
    assert [r["prompt"][0]["content"] for r in val] == [f"What is {i} + {i}?" for i in sorted(order[:2])]
    panel.fields["validation_fraction"].value = 0.25
    assert [len(x) for x in panel.records()] == [15, 5]
    panel.fields["seed"].value = 4
    assert panel.records()[1] != val and len(panel.records()[1]) == 5


@pytest.mark.parametrize("lines, expected", [
    (['{"question": "a", "answer": "b"}', '{"question": "c", "answer": "d"', ''], "d.jsonl:2: malformed JSON"),
    (['{"question": "a", "answer": "b"}', '{"question": "c"}', '{"question": "e", "answer": "f"}'],
     "column 'answer' at row 2 is missing"),
    (['{"question": "a", "answer": "b"}', '{"question": "c", "answer": "d"}', '{"question": " ", "answer": "f"}'],
     "column 'question' at row 3 is empty"),
    (['{"question": "a", "answer": 7}', '{"question": "c", "answer": "d"}', '{"question": "e", "answer": "f"}'],
     "column 'answer' at row 1 is int 7: text (a string) is needed"),
    (['{"question": "a", "answer": "b"}', '{"question": "c", "answer": "d"}'], "2 examples with validation_frac"),
])
def test_a_bad_file_is_shown_inline_with_its_row_and_the_last_valid_data_kept(tokenizer, tmp_path, lines, expected):
    good = write_jsonl(tmp_path / "good.jsonl", pairs(10))
    panel = DataPanel(tokenizer, path=good)
    before = panel.records()
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    panel.fields["path"].value = str(tmp_path / "d.jsonl")
    assert expected in panel.message.value and "⚠" in panel.message.value
    assert panel.records() == before and panel.path == good and "last valid data" in panel.summary.value
    panel.fields["path"].value = good
    assert panel.error is None and panel.message.value == ""


def test_other_mistakes_are_inline(tokenizer, tmp_path):
    (tmp_path / "d.txt").write_text("x")
    panel = DataPanel(tokenizer, path=str(tmp_path / "d.txt"))
    assert "suffix '.txt' is not one ftlab reads" in panel.message.value
    with pytest.raises(DataError, match="no data yet"):
        panel.records()
    panel.fields["path"].value = write_jsonl(tmp_path / "d.jsonl", pairs(10))
    before = panel.records()
    for field, value, expected in [("validation_fraction", 0.5, "validation_fraction=0.5 is not allowed"),
                                   ("seq_len", 0, "seq_len=0 is not allowed"),
                                   ("completion", None, "choose the completion column"),
                                   ("prompt", "id", "column 'id' at row 1 is int 0")]:
        panel.fields[field].value = value
        assert expected in panel.message.value and panel.records() == before, field
        panel.fields[field].value = {"validation_fraction": 0.1, "seq_len": 256, "completion": "answer",
                                     "prompt": "question"}[field]
        assert panel.error is None
    chat = [{"messages": [{"role": "user", "content": "hi"}]}] * 4
    panel.fields["path"].value = write_jsonl(tmp_path / "c.jsonl", chat)
    assert "column 'messages' at row 1: the chat ends with a 'user' turn" in panel.message.value
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    panel.fields["path"].value = str(tmp_path / "bad.parquet")
    assert "bad.parquet cannot be read as PARQUET" in panel.message.value and panel.records() == before


def test_an_upload_is_read_like_a_path(tokenizer, tmp_path):
    panel = DataPanel(tokenizer)
    assert panel.message.value == "" and panel.summary.value == ""
    body = "".join(json.dumps(r) + "\n" for r in pairs(6)).encode()
    panel.upload.value = ({"name": "mine.jsonl", "type": "", "size": len(body), "content": memoryview(body),
                           "last_modified": datetime.now(timezone.utc)},)
    assert panel.fields["path"].value.endswith("/mine.jsonl") and panel.error is None
    assert "<b>mine.jsonl</b>: 6 examples" in panel.summary.value
    assert sum(map(len, panel.records())) == 6


def test_records_of_a_200_pair_file_are_what_a_run_accepts(tiny_folder, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_folder)
    panel = DataPanel(tok, path=write_jsonl(tmp_path / "d.jsonl", pairs(200)), seq_len=64, system_prompt="Add.")
    train, val = panel.records()
    assert (len(train), len(val)) == (180, 20)
    cfg = TrainConfig(model=tiny_folder, seq_len=64, output_dir=str(tmp_path / "run"))
    check_run_arguments(cfg, train, val)  # raises on a record shape the trainer would not take


@pytest.mark.parametrize("text,expected", [
    ("prompt,completion\nq0,a0,extra\nq1,a1\n", "row 1: 3 cells, the header has 2"),
    ("prompt,completion,prompt\nq0,a0,z0\n", "the name 'prompt' twice"),
    ("prompt,,completion\nq0,x,a0\n", "an empty name at column 2"),
    ("", "is empty"),
])
def test_a_csv_that_pandas_would_misread_is_refused_with_its_row(tokenizer, tmp_path, text, expected):
    """pandas takes a row with a cell too many as an index (the columns shift) and keeps one of two equal names."""
    path = tmp_path / "t.csv"
    path.write_text(text)
    panel = DataPanel(tokenizer)
    panel.fields["path"].value = str(path)
    assert expected in panel.message.value and panel.error.field == "path"


@pytest.mark.parametrize("chat,expected", [
    ([{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}], "role 'bot'"),
    ([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}], "the roles are"),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}], "the roles are"),
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}], "content is not empty"),
])
def test_a_chat_with_unknown_roles_no_user_turn_or_empty_turns_is_refused(tokenizer, tmp_path, chat, expected):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [good, {"messages": chat}, good])
    panel = DataPanel(tokenizer, path=path)
    assert "row 2" in panel.message.value and expected in panel.message.value


def test_a_bad_path_stays_in_error_when_another_field_changes(tokenizer, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", pairs(10))
    panel = DataPanel(tokenizer, path=good)
    panel.fields["path"].value = str(tmp_path / "missing.jsonl")
    assert panel.error is not None and panel.error.field == "path"
    panel.fields["seq_len"].value = 32  # not the file in the path box: the error stays
    assert panel.error is not None and panel.error.field == "path" and panel.path == good
