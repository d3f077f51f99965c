"""The classic RAG engine behind the door: a :class:`~unirag.rag.model.RagModel` answers with
RAG-Token or RAG-Sequence decoding; each source carries its prior p(z|x), and under RAG-Token
the answer spans it supports (the per-token posterior p(z | x, y_i, y<i))."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from unirag.engine import Clock
from unirag.outputs import (Answer, Event, Finished, RetrievalEvent, Source, Span, TextDelta, Timings, TraceStep,
                            Usage, extract_answer)
from unirag.sampling_params import SamplingParams

DECODINGS = {"token": ("greedy", "sample", "beam"), "sequence": ("thorough", "fast")}


class RagEngine:
    """RAG-Token / RAG-Sequence answering with attribution. ``decoding``: ``greedy`` / ``beam``
    (RAG-Token; ``sample`` is chosen by a temperature > 0), ``thorough`` / ``fast`` (RAG-Sequence);
    default: greedy for token, thorough for sequence."""

    def __init__(self, model: Any, variant: str | None = None, decoding: str | None = None, num_beams: int = 4):
        from unirag.config.base import ConfigError

        self.model = model
        self.variant = variant or model.config.variant
        if self.variant not in DECODINGS:
            raise ConfigError(f"variant {self.variant!r}: use token or sequence")
        if decoding is not None and decoding not in DECODINGS[self.variant]:
            raise ConfigError(f"decoding {decoding!r} is not a RAG-{self.variant.capitalize()} decoding; "
                              f"use one of {list(DECODINGS[self.variant])}")
        self.decoding = decoding
        self.num_beams = num_beams
        self.name = f"rag-{self.variant}"
        import threading

        self._write_lock = threading.Lock()
        self.document_encoder: Any = None  # embeds added passages; None: the one the index manifest names

    # --- the door's verbs ------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int) -> Any:
        """Top-``k`` of the model's retriever, queried by its (trainable) question encoder."""
        return self.model.retriever.search(list(queries), k)

    def swap_index(self, folder: str) -> None:
        """Hot-swap the index (same document encoder; no reload, no retraining)."""
        self.model.swap_index(folder)

    def add_documents(self, passages: Any) -> dict[str, Any]:
        """Add (or replace, by id) passages in the index, embedded by the index's own document
        encoder: :attr:`document_encoder` if set, else the encoder the manifest names (loaded
        once; never the trainable question encoder)."""
        return self._update(add=passages)

    def delete_documents(self, ids: Any) -> dict[str, Any]:
        """Remove passages by id from the index (unknown ids: an error, nothing changed)."""
        return self._update(delete=ids)

    def _update(self, add: Any = (), delete: Any = ()) -> dict[str, Any]:
        from unirag.retrieval.update import update_index

        with self._write_lock:
            r = self.model.retriever
            if r is None or r.path is None:
                from unirag.config.base import ConfigError

                raise ConfigError("this RAG model has no index folder to update")
            folder = r.path
            if self.document_encoder is None:
                from unirag.models.encoder import Encoder

                self.document_encoder = Encoder.from_pretrained(r.index.manifest.encoder)
            res = update_index(folder, self.document_encoder, add=add, delete=delete)
            self.model.swap_index(str(folder))
        return res.to_dict()

    def info(self) -> dict[str, Any]:
        """Variant, decoding, parts and index."""
        c, r = self.model.config, self.model.retriever
        return {"engine": self.name, "variant": self.variant, "decoding": self._decoding(SamplingParams()),
                "generator": c.generator, "question_encoder": c.question_encoder, "n_docs": c.n_docs,
                "index": str(getattr(r, "path", "") or c.index or ""), "passages": len(r.store) if r else 0}

    def _decoding(self, params: SamplingParams) -> str:
        if self.variant == "token":
            return "sample" if not params.greedy else (self.decoding if self.decoding in ("greedy", "beam")
                                                       else "greedy")
        return self.decoding or "thorough"

    def ask_batch(self, questions: Sequence[str], params: SamplingParams) -> list[Answer]:
        """Retrieve K passages per question, decode, attribute; one :class:`Answer` each."""
        from unirag.rag.answer import answer_questions

        clock = Clock()
        outs = answer_questions(self.model, list(questions), variant=self.variant, decoding=self._decoding(params),
                                num_beams=self.num_beams, max_new_tokens=params.max_new_tokens,
                                temperature=params.temperature or 1.0, top_k=params.top_k, top_p=params.top_p,
                                n_docs=params.k or None, generator=params.generator())
        each = clock.total() / max(1, len(questions))
        return [self._answer(o, params, each) for o in outs]

    def _answer(self, r: Any, params: SamplingParams, seconds: float) -> Answer:
        text, reason = r.answer, "length" if len(r.tokens) >= params.max_new_tokens else "stop"
        for s in params.stop:
            if s in text:
                text, reason = text[: text.index(s)], "stop"
        spans: dict[int, list[Span]] = {}
        cursor = 0
        for sp in r.spans:  # locate each attributed span in the answer text, left to right
            at = text.find(sp.text.strip(), cursor) if sp.text.strip() else -1
            if at >= 0:
                cursor = at + len(sp.text.strip())
            spans.setdefault(sp.doc, []).append(Span(sp.text.strip(), at, at + len(sp.text.strip()) if at >= 0 else -1,
                                                     sp.prob))
        post = r.doc_posterior or r.doc_prior
        sources = [Source(number=k + 1, id=p.id, title=p.title, text=p.text,
                          score=r.doc_scores[k] if r.doc_scores else r.doc_prior[k], prob=post[k],
                          spans=spans.get(k, []), meta={"prior": r.doc_prior[k]} | dict(p.meta))
                   for k, p in enumerate(r.passages)]
        ids = [p.id for p in r.passages]
        trace = [TraceStep(r.question, None, ids, [s.score for s in sources], ids)]
        return Answer(r.question, text.strip(), sources, trace, Usage(r.context_tokens, len(r.tokens)),
                      Timings(generation=seconds, total=seconds), engine=self.name, finish_reason=reason,
                      short=extract_answer(text), extra={"sequence_score": r.score,
                                                         "decoding": self._decoding(params)})

    def admits(self, params: SamplingParams) -> bool:
        """False: RAG decoders run whole batches (see :meth:`stream_batch`)."""
        return False

    def stream_batch(self, questions: Sequence[str], params: SamplingParams | Sequence[SamplingParams],
                     cancelled: Callable[[int], bool] | None = None, admit: Any = None,
                     ) -> Iterator[tuple[int, Event]]:
        """``(question index, event)`` pairs. RAG decoders marginalise over whole hypotheses (beam,
        thorough), so each answer is known only at the end: questions sharing the same params
        decode as one batch, then each yields its retrieval event, its text in one delta and
        ``Finished``. Nothing joins a running batch (:meth:`admits` is false; ``admit`` is unused)."""
        per = [params] * len(questions) if isinstance(params, SamplingParams) else list(params)
        clock = Clock()
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(per):
            if cancelled is None or not cancelled(i):
                groups.setdefault(repr(p.to_dict()), []).append(i)
        for idx in groups.values():
            answers = self.ask_batch([questions[i] for i in idx], per[idx[0]])
            for i, ans in zip(idx, answers):
                ans.timings.first_token = clock.total()
                yield i, RetrievalEvent(ans.trace[0], ans.sources)
                yield i, TextDelta(ans.text)
                yield i, Finished(ans)

    def stream(self, question: str, params: SamplingParams) -> Iterator[Event]:
        """The retrieval event, then the text in one delta, then ``Finished`` (see :meth:`stream_batch`)."""
        for _, ev in self.stream_batch([question], params):
            yield ev
