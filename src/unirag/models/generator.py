"""A generator wrapper over any causal or seq2seq LM: chat prompts, batched generation, streaming.

Causal LMs decode with the one KV-cache loop (:mod:`unirag.models.decoding`: ragged batches,
a private random generator per request); seq2seq LMs with transformers' ``generate``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from unirag.models.quiet import quiet_loading
from unirag.models.registry import load_error, resolve_model
from unirag.sampling_params import SamplingParams


def load_causal_lm(name: str, dtype: str = "float32", device: str = "cpu"):
    """``(model, tokenizer)`` for a causal LM from an alias, local folder or hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model(name)
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
    except OSError as exc:
        raise load_error(name, exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


class Generator:
    """A language model that writes answers: ``chat_prompt`` + ``generate`` / ``stream``."""

    def __init__(self, model, tokenizer, name: str = "", banned_token_id: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.banned_token_id = banned_token_id  # e.g. a OneGen model's query token, never emitted when reading
        self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))

    @classmethod
    def from_pretrained(cls, name: str, dtype: str | None = None, device: str = "cpu") -> Generator:
        """Load from an alias (``smollm2-135m-instruct``), a local folder or a hub id; ``dtype``
        ``None``: the packaged model's measured CPU default (Qwen: bfloat16), else float32."""
        import torch

        from unirag.models.registry import default_dtype

        dtype = dtype or default_dtype(name)

        folder = resolve_model(name)
        from transformers import AutoConfig

        try:
            with quiet_loading():
                seq2seq = bool(getattr(AutoConfig.from_pretrained(folder), "is_encoder_decoder", False))
        except OSError as exc:
            raise load_error(name, exc) from None
        if seq2seq:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            try:
                with quiet_loading():
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

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt made by :meth:`chat_prompt` (the template already holds the special
        tokens; plain prompts get the tokenizer's)."""
        add_special = self.is_seq2seq or not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"]

    def decoder(self):
        """The KV-cache decoding loop over this (causal) model, without retrieval."""
        from unirag.models.decoding import Decoder, EngineModel

        if self.is_seq2seq:
            raise TypeError("the KV-cache loop decodes causal LMs; seq2seq models use generate()")
        # the loop bans its query token when no retriever is attached: a banned token is just that
        return Decoder(EngineModel(self.model, self.tokenizer, query_token_id=self.banned_token_id, name=self.name))

    def generate_batch(self, prompts: Sequence[str], params: SamplingParams | None = None) -> list:
        """Decode ``prompts`` together; one :class:`~unirag.models.decoding.Output` per prompt
        (``text``, ``token_ids``, ``finish_reason``), in order. Seq2seq models decode one by one."""
        from unirag.models.decoding import Output

        params = params or SamplingParams()
        if not self.is_seq2seq:
            return self.decoder().generate([self.encode_prompt(p) for p in prompts], params)
        outs = []
        for i, p in enumerate(prompts):
            ids = self._seq2seq_generate(p, params)
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            text, reason = _apply_stop(text, params.stop, "length" if len(ids) >= params.max_new_tokens else "stop")
            outs.append(Output(i, text, text, ids, ids, [], reason))
        return outs

    def generate(self, prompt: str, params: SamplingParams | None = None) -> str:
        """The full completion of ``prompt`` (prompt text excluded)."""
        return self.generate_batch([prompt], params)[0].text.strip()

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text pieces as they are generated (seq2seq: the whole text at once)."""
        from unirag.models.decoding import TextEvent

        params = params or SamplingParams()
        if self.is_seq2seq:
            yield self.generate(prompt, params)
            return
        for ev in self.decoder().stream([self.encode_prompt(prompt)], params):
            if isinstance(ev, TextEvent) and ev.text:
                yield ev.text

    def _seq2seq_generate(self, prompt: str, params: SamplingParams) -> list[int]:
        import torch

        kw = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                  repetition_penalty=params.repetition_penalty)
        if params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.model.device)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():  # the seed stays private
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(**inputs, **kw)
        return out[0].tolist()


def _apply_stop(text: str, stop: Sequence[str], reason: str) -> tuple[str, str]:
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, reason)
