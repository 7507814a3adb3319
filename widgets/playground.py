"""Playground: one prompt, every model's answer side by side, streamed as it is generated.

Panels: "base" (the peft model with its adapter disabled, or `base=` for a full fine-tune), "trained" and `others`
({name: model}, or {name: another adapter of `model`}, put on with peft's set_adapter). Every model gets the same
(chat-templated) input and decoding settings; they answer one after the other, each streamed into its panel by
transformers' TextIteratorStreamer while generate runs in a thread. Each model's train/eval mode, requires_grad flags
and active adapter are put back afterwards (it works after a training Stop). Papermill: `playground.generate()`."""
from __future__ import annotations

import contextlib
import copy
import html
import math
import threading
import time

import ipywidgets as W
import torch
from IPython.display import display

from ftlab.errors import ConfigError, FtlabError
from ftlab.records import check_tokenizer
from ftlab.widgets.playground_inputs import _check_model, _check_others, _example, _is_peft

MAX_NEW_TOKENS = 4096
RED = "#b00020"
STYLE = {"description_width": "110px"}


def _number(value, kind):
    try:
        return kind(str(value).strip())
    except ValueError:
        return None


@contextlib.contextmanager
def _kept_state(module):
    """Eval mode while generating, then the mode and requires_grad flags as before (peft turns adapters trainable)."""
    was_training, flags = module.training, [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _adapter(model, name: str):
    """Another adapter of a peft model for a while (peft's set_adapter), then the one active before."""
    before = model.active_adapter
    try:
        yield model.set_adapter(name)
    finally:
        model.set_adapter(before)


class Playground:
    def __init__(self, model, tokenizer, *, base=None, others=None, prompts=None, max_new_tokens=64, temperature=0.0,
                 controls=None):
        """model: the trained model (a peft model, or any causal LM); base: the model before training, when it is
        not `model` with its adapter disabled (a full fine-tune); others: {name: model or adapter name of model};
        prompts: examples offered in a dropdown (strings or records, e.g. the validation split); controls: the
        notebook's RunControls, so that nothing is generated while its run changes the weights."""
        if controls is not None and not hasattr(controls, "current"):
            raise ConfigError("controls", controls, "a RunControls (ftlab.widgets.RunControls) or None")
        self.controls = controls
        self.model, self.tokenizer = _check_model("model", model), check_tokenizer(tokenizer)
        self.base = None if base is None else _check_model("base", base)
        self.others = {} if others is None else _check_others(model, others)
        self.examples = [_example(i, p) for i, p in enumerate(  # a list of them, or one; anything else refused
            [] if prompts is None else [prompts] if isinstance(prompts, (str, dict)) else
            prompts if isinstance(prompts, (list, tuple)) else _example(-1, prompts))]
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        same = contextlib.nullcontext  # (name, module, context): generate runs on module inside context()
        before = (self.base, same) if self.base is not None else \
            (model, model.disable_adapter) if _is_peft(model) else None
        self.targets = ([("base", *before)] if before else []) + [("trained", model, same)] + [
            (name, model, lambda a=other: _adapter(model, a)) if isinstance(other, str) else (name, other, same)
            for name, other in self.others.items()]
        self.names = [name for name, _, _ in self.targets]
        # answers {name: text} of the last generation (None: failed, see failed); texts: panels; errors: {field: ...}
        self.answers, self.failed, self.texts, self.errors = {}, {}, dict.fromkeys(self.names, ""), {}
        self.redraw_interval_s, self.thread, self.busy = 0.25, None, False  # a few redraws a second
        self._make_widgets(max_new_tokens, temperature)
        self._show_errors({k: e for k, e in self._read()[1].items() if k != "prompt"})

    def _make_widgets(self, max_new_tokens, temperature) -> None:
        options = [("pick an example …", -1)] + [(f"{i}: {p[:80]}", i) for i, (_, p) in enumerate(self.examples)]
        size = lambda width, **more: dict(style=STYLE, layout=W.Layout(width=width, **more))  # noqa: E731
        self.fields = {
            "example": W.Dropdown(options=options, value=-1, description="example",
                                  **size("640px", display=None if self.examples else "none")),
            "prompt": W.Textarea(description="prompt", placeholder="what to ask every model",
                                 **size("640px", height="90px")),
            "system": W.Text(description="system prompt", placeholder="optional", **size("640px")),
            "temperature": W.Text(value=f"{temperature:g}" if isinstance(temperature, float) else str(temperature),
                                  description="temperature", tooltip="0: greedy", **size("220px")),
            "max_new_tokens": W.Text(value=str(max_new_tokens), description="max new tokens",
                                     tooltip=f"1 to {MAX_NEW_TOKENS}", **size("220px")),
        }
        self.fields["example"].observe(lambda change: self._pick(change["new"]), names="value")
        self.button = W.Button(description="Generate", button_style="primary", icon="play",
                               tooltip="every model answers the prompt, one after the other")
        self.button.on_click(lambda _: self.generate(background=True))
        self.show_input = W.Checkbox(value=False, description="show the input the models see", indent=False)
        self.show_input.observe(lambda change: setattr(self.input_view.layout, "display",
                                                       None if change["new"] else "none"), names="value")
        self.status, self.message, self.input_view = W.HTML(), W.HTML(), W.HTML(layout=W.Layout(display="none"))
        self.notice = W.HTML("" if self.chat else "<span style='color:#e65100'><b>tokenizer</b>: it has no chat "
                             "template, so the models see the prompt as plain text (no chat turns)</span>")
        self.panels = {name: W.HTML(layout=W.Layout(flex="1 1 0px", min_width="240px", margin="0 4px 0 0"))
                       for name in self.names}
        for name in self.names:
            self._panel(name, "", "")
        self.widget = W.VBox([W.HTML("<b>Playground</b>"), *[self.fields[k] for k in ("example", "prompt", "system")],
                              W.HBox([self.fields["temperature"], self.fields["max_new_tokens"]]),
                              W.HBox([self.button, self.show_input, self.status]), self.message, self.notice,
                              W.HBox(list(self.panels.values()), layout=W.Layout(flex_flow="row wrap")),
                              self.input_view])

    def _pick(self, index) -> None:
        if index is not None and index >= 0:  # the example's system prompt, or none: never the previous example's
            system, self.fields["prompt"].value = self.examples[index]
            self.fields["system"].value = system or ""

    def _read(self):
        """((prompt, system, temperature, max_new_tokens), {field: ConfigError}) from the fields."""
        f, errors = self.fields, {}
        prompt, system = f["prompt"].value, f["system"].value
        if not prompt.strip():
            errors["prompt"] = ConfigError("prompt", prompt, "some text: type a prompt or pick an example")
        temperature = _number(f["temperature"].value, float)
        if temperature is None or not math.isfinite(temperature) or temperature < 0:
            errors["temperature"] = ConfigError("temperature", f["temperature"].value,
                                                "a number ≥ 0 (0: greedy, the most likely token each step)")
        tokens = _number(f["max_new_tokens"].value, int)
        if tokens is None or not 1 <= tokens <= MAX_NEW_TOKENS:
            errors["max_new_tokens"] = ConfigError("max_new_tokens", f["max_new_tokens"].value,
                                                   f"a whole number from 1 to {MAX_NEW_TOKENS}")
        return (prompt, system, temperature, tokens), errors

    def _input_text(self, prompt: str, system: str) -> str:
        """What every model sees: the chat template with the assistant turn opened (plain text without one)."""
        if not self.chat:
            return f"{system}\n\n{prompt}" if system.strip() else prompt
        turns = [{"role": "system", "content": system}] * bool(system.strip()) + [{"role": "user", "content": prompt}]
        try:
            return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # a template that refuses a system turn (jinja's TemplateError) or this prompt
            why = f"the tokenizer's chat template refused it ({type(e).__name__}: {str(e)[:200]})"
            if system.strip():
                raise ConfigError("system", system, f"empty for this model: {why}") from None
            raise ConfigError("prompt", prompt, f"a prompt the model's chat template accepts: {why}") from None

    def _show_errors(self, errors: dict) -> None:
        self.errors = errors
        self.message.value = "<br>".join(f"<span style='color:{RED}'>⚠ <b>{html.escape(k)}</b>: "
                                         f"{html.escape(str(e))}</span>" for k, e in errors.items())

    def generate(self, background: bool = False):
        """Every model's answer to the prompt, one after the other: {name: text} (also .answers); background=True:
        the thread it runs in (the notebook stays live; .thread.join() waits). Invalid fields: inline messages, no
        generation, None. While a generation runs, another call does nothing (None)."""
        job = None if self.busy else self._prepare()  # busy: set here, cleared by the generating thread at its end
        if job is None:
            return None
        self.busy = self.button.disabled = True
        if background:
            self.thread = threading.Thread(target=self._run, args=job, daemon=True, name="ftlab-playground")
            self.thread.start()
            return self.thread
        self._run(*job)
        return self.answers

    def _prepare(self):
        """(inputs, generation config, settings line) from valid fields, or None after showing what is wrong."""
        (prompt, system, temperature, tokens), errors = self._read()
        run = getattr(self.controls, "current", None)
        if run is not None and run.running:  # a Run trains these very weights: answers would be of no step at all
            errors["model"] = FtlabError("a training run is changing these weights: press Stop above, or wait until "
                                         "it has finished, then Generate again", field="model")
        try:
            text = None if errors else self._input_text(prompt, system)
        except ConfigError as e:
            errors = {e.field: e}
        self._show_errors(errors)
        if errors:
            return None
        from transformers import GenerationConfig  # lazy: `import ftlab.widgets` stays free of transformers
        tok, gen = self.tokenizer, copy.deepcopy(getattr(self.model, "generation_config", None) or GenerationConfig())
        gen.pad_token_id = next(i for i in (gen.pad_token_id, tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
        # the same settings for every model: greedy at 0, else plain sampling at this temperature
        gen.update(max_new_tokens=tokens, do_sample=temperature > 0, use_cache=True,
                   **(dict(temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {}))
        inputs = tok(text, return_tensors="pt", add_special_tokens=not self.chat)
        self.input_view.value = (f"<b>input ({inputs['input_ids'].shape[1]} tokens{'' if self.chat else ', plain text'}"
                                 f")</b><pre style='white-space:pre-wrap;font-size:85%'>{html.escape(text)}</pre>")
        how = "greedy" if temperature == 0 else f"sampled at temperature {temperature:g}"
        return dict(inputs), gen, f"{how}, at most {tokens} new tokens"

    def _run(self, inputs: dict, gen, settings: str) -> None:
        started, answers, failed = time.perf_counter(), {}, {}
        try:
            for name in self.names:
                self._panel(name, "", "waiting …")
            for name, module, context in self.targets:
                self.status.value = f"<span style='color:#1565c0'>{html.escape(name)} answers ({settings}) …</span>"
                answers[name] = self._answer(name, module, context, inputs, gen, failed)
            done = f"{len(failed)} of {len(self.names)} failed" if failed else "done"
            self.status.value = (f"<span style='color:{RED if failed else '#2e7d32'}'>{done} in "
                                 f"{time.perf_counter() - started:.1f} s ({settings})</span>")
        finally:
            self.answers, self.failed = answers, failed
            self.busy = self.button.disabled = False

    def _answer(self, name, module, context, inputs: dict, gen, failed: dict):
        """One model's answer, streamed into its panel; None when it fails (shown there, put in `failed`)."""
        from transformers import TextIteratorStreamer  # lazy: transformers only once a playground generates
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result, text, last, started = {}, "", 0.0, time.perf_counter()

        def work(**encoded):
            try:
                with torch.no_grad():  # grad mode is per thread: the caller's no_grad does not reach this one
                    result["ids"] = module.generate(**encoded, generation_config=gen, streamer=streamer)
            except Exception as e:
                result["error"] = e
                streamer.end()  # ends the iteration below

        self._panel(name, "", "generating …")
        try:
            with _kept_state(module), context():
                device = getattr(module, "device", None) or next(module.parameters()).device
                thread = threading.Thread(target=work, daemon=True, name=f"ftlab-playground-{name}",
                                          kwargs={k: v.to(device) for k, v in inputs.items()})
                thread.start()
                try:
                    for chunk in streamer:
                        text += chunk
                        if time.perf_counter() - last >= self.redraw_interval_s:
                            self._panel(name, text, "generating …")
                            last = time.perf_counter()
                finally:
                    thread.join()  # before the context puts the adapter back
        except Exception as e:  # putting an adapter on, or the input on the model's device
            result["error"] = e
        if "error" in result:
            e = failed[name] = result["error"]
            return self._panel(name, text, f"⚠ {type(e).__name__}: {str(e)[:300]}", error=True)
        new = result["ids"][0, inputs["input_ids"].shape[1]:]
        answer = self.tokenizer.decode(new, skip_special_tokens=True)
        self._panel(name, answer, f"{len(new)} tokens · {time.perf_counter() - started:.1f} s")
        return answer

    def _panel(self, name: str, text: str, note: str, error: bool = False) -> None:
        self.texts[name] = text
        self.panels[name].value = (
            f"<div style='border:1px solid #ccc;border-radius:4px;padding:6px'><b>{html.escape(name)}</b> "
            f"<span style='color:{RED if error else '#666'};font-size:90%'>{html.escape(note)}</span>"
            f"<pre style='white-space:pre-wrap;margin:4px 0 0 0;font-size:90%'>{html.escape(text)}</pre></div>")

    def _ipython_display_(self):
        display(self.widget)
