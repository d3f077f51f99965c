"""The retrieve-then-read engine: a retriever finds top-k passages, numbered into the
generator's chat template; the generator answers in one pass (causal LMs decode together in
the KV-cache loop, so a batch of questions is one batch of rows)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from unirag.config.base import ConfigBase
from unirag.engine import Clock, hits, make_sources
from unirag.outputs import Answer, Event, Finished, RetrievalEvent, TextDelta, Timings, TraceStep, Usage, \
    extract_answer
from unirag.pipeline.prompt import SYSTEM, build_prompt
from unirag.sampling_params import SamplingParams


@dataclass
class PipelineConfig(ConfigBase):
    """Settings of :class:`PipelineEngine`: passages per question (``k``; 0 = closed book, no
    retrieval), words kept of each passage, and the system prompt."""

    k: int = 3
    max_passage_words: int = 120
    system_prompt: str = SYSTEM


class PipelineEngine:
    """Retrieve-then-read over any retriever (dense, BM25, hybrid) and any generator."""

    name = "pipeline"

    def __init__(self, retriever: Any, generator: Any, config: PipelineConfig | None = None, kind: str = "dense"):
        self.retriever = retriever
        self.generator = generator
        self.config = config or PipelineConfig()
        self.kind = kind

    # --- the door's verbs ------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int) -> Any:
        """The retriever's top-``k`` for each query."""
        return self.retriever.search(list(queries), k)

    def swap_index(self, folder: str) -> None:
        """Search another index folder from now on (same kind of retriever, same encoder; the
        models stay loaded). The new retriever is opened and verified first, then installed by one
        assignment, so a search sees the old index or the new one, never a mix."""
        from unirag.retrieval.loader import load_retriever

        old = self.retriever
        dense = old if hasattr(old, "encoder") else next((r for r in getattr(old, "retrievers", [])
                                                          if hasattr(r, "encoder")), None)
        self.retriever = load_retriever(folder, self.kind, encoder=dense.encoder if dense is not None else None)

    def info(self) -> dict[str, Any]:
        """Generator, retriever kind, index folder and size."""
        r = self.retriever
        return {"engine": self.name, "generator": getattr(self.generator, "name", ""),
                "retriever": self.kind if r is not None else None, "index": str(getattr(r, "path", "") or ""),
                "passages": len(r.store) if r is not None else 0}

    def prepare(self, questions: Sequence[str], params: SamplingParams) -> list[tuple[str, Answer]]:
        """Retrieve for every question (one batched search) and build each prompt; returns
        ``(prompt, answer skeleton with sources, trace and retrieval time)`` per question."""
        if self.generator is None:
            from unirag.config.base import ConfigError

            raise ConfigError("this pipeline was loaded for search only (generator=None): nothing can answer")
        k = self.config.k if params.k is None else params.k
        clock = Clock()
        res = self.retriever.search(list(questions), k) if k > 0 and self.retriever is not None else None
        t_ret = clock.lap() / max(1, len(questions))
        out = []
        for i, q in enumerate(questions):
            passages, scores = hits(res, i) if res is not None else ([], [])
            if res is not None:
                system, user = self.config.system_prompt, build_prompt(q, passages, self.config.max_passage_words)
            else:  # closed book: the question alone in the chat template
                system, user = None, q
            trace = [TraceStep(q, None, [p.id for p in passages], scores, [p.id for p in passages])] if res else []
            ans = Answer(q, "", make_sources(passages, scores), trace, engine=self.name,
                         timings=Timings(retrieval=t_ret))
            out.append((self.generator.chat_prompt(user, system=system), ans))
        return out

    def ask_batch(self, questions: Sequence[str], params: SamplingParams) -> list[Answer]:
        """Answers to ``questions``: one search, then one batch of generation."""
        clock = Clock()
        prepared = self.prepare(questions, params)
        outs = self.generator.generate_batch([p for p, _ in prepared], params)
        gen = clock.total() / max(1, len(questions))
        for (prompt, ans), o in zip(prepared, outs):
            ans.text, ans.finish_reason = o.text.strip(), o.finish_reason
            ans.short = extract_answer(ans.text)
            ans.usage = Usage(len(self.generator.encode_prompt(prompt)), len(o.token_ids))
            ans.timings.generation = gen - ans.timings.retrieval
            ans.timings.total = gen
        return list(a for _, a in prepared)

    def stream(self, question: str, params: SamplingParams) -> Iterator[Event]:
        """A retrieval event with the numbered sources, then the answer text as it is generated."""
        clock = Clock()
        (prompt, ans), = self.prepare([question], params)
        if ans.trace:
            yield RetrievalEvent(ans.trace[0], ans.sources)
        pieces, first = [], None
        ids = self.generator.encode_prompt(prompt)
        n_gen = 0
        if self.generator.is_seq2seq:
            out = self.generator.generate_batch([prompt], params)[0]
            pieces, n_gen, ans.finish_reason = [out.text.strip()], len(out.token_ids), out.finish_reason
            first = clock.total()
            yield TextDelta(pieces[0])
        else:
            from unirag.models.decoding import DoneEvent, TextEvent

            for ev in self.generator.decoder().stream([ids], params):
                if isinstance(ev, TextEvent) and ev.text:
                    first = clock.total() if first is None else first
                    pieces.append(ev.text)
                    yield TextDelta(ev.text)
                elif isinstance(ev, DoneEvent):
                    n_gen, ans.finish_reason = len(ev.output.token_ids), ev.output.finish_reason
        ans.text = "".join(pieces).strip()
        ans.short = extract_answer(ans.text)
        ans.usage = Usage(len(ids), n_gen)
        total = clock.total()
        ans.timings = Timings(ans.timings.retrieval, total - ans.timings.retrieval, total, first)
        yield Finished(ans)
