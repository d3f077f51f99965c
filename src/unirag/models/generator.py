"""A generator wrapper over any causal or seq2seq LM: chat prompts, greedy/sampled generation, streaming."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from unirag.models.registry import load_error, resolve_model


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advisory warnings."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def load_causal_lm(name: str, dtype: str = "float32", device: str = "cpu"):
    """``(model, tokenizer)`` for a causal LM from an alias, local folder or hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    folder = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
    except OSError as exc:
        raise load_error(name, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


@dataclass
class GenerationParams:
    """Decoding settings shared by every generator (``temperature == 0`` means greedy)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None


class Generator:
    """A language model that writes answers: ``chat_prompt`` + ``generate`` / ``stream``."""

    def __init__(self, model, tokenizer, name: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))

    @classmethod
    def from_pretrained(cls, name: str, dtype: str = "float32", device: str = "cpu") -> Generator:
        """Load from an alias (``smollm2-135m-instruct``), a local folder or a hub id."""
        import torch

        quiet_transformers()
        folder = resolve_model(name)
        from transformers import AutoConfig

        try:
            seq2seq = bool(getattr(AutoConfig.from_pretrained(folder), "is_encoder_decoder", False))
        except OSError as exc:
            raise load_error(name, exc) from None
        if seq2seq:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
            except OSError as exc:
                raise load_error(name, exc) from None
        else:
            model, tok = load_causal_lm(name, dtype=dtype, device=device)
        return cls(model, tok, name)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Save model and tokenizer."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The model's chat template applied to one user turn (plain text for models without one)."""
        if self.is_seq2seq or not getattr(self.tokenizer, "chat_template", None):
            return f"{system}\n\n{user}" if system else user
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _gen_kwargs(self, params: GenerationParams) -> dict:
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        kw = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                  repetition_penalty=params.repetition_penalty)
        if params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def _inputs(self, prompt: str):
        add_special = self.is_seq2seq or not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(prompt, return_tensors="pt", add_special_tokens=add_special).to(self.model.device)

    def generate(self, prompt: str, params: GenerationParams | None = None) -> str:
        """The full completion of ``prompt`` (prompt text excluded)."""
        import torch

        params = params or GenerationParams()
        inputs = self._inputs(prompt)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self._gen_kwargs(params))
        new = out[0] if self.is_seq2seq else out[0, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def stream(self, prompt: str, params: GenerationParams | None = None) -> Iterator[str]:
        """Yield text pieces as they are generated (``TextIteratorStreamer`` in a worker thread)."""
        import torch
        from transformers import TextIteratorStreamer

        params = params or GenerationParams()
        inputs = self._inputs(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, **self._gen_kwargs(params), streamer=streamer)
            except BaseException as exc:  # surfaced in the caller's thread
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from (piece for piece in streamer if piece)
        worker.join()
        if errors:
            raise errors[0]

