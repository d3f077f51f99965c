"""The retrieve-then-read engine: a retriever finds top-k passages, numbered into the
generator's chat template; the generator answers in one pass (causal LMs decode together in
the KV-cache loop, so a batch of questions is one batch of rows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from unirag.config.base import ConfigBase
from unirag.engine import BatchStreaming, Clock, hits, make_sources
from unirag.outputs import Answer, Event, Finished, RetrievalEvent, TextDelta, Timings, TraceStep, Usage
from unirag.pipeline.prompt import style_for
from unirag.sampling_params import SamplingParams


@dataclass
class PipelineConfig(ConfigBase):
    """Settings of :class:`PipelineEngine`: passages per question (``k``; 0 = closed book, no
    retrieval), words kept of each passage, the prompt style (a key of
    :data:`unirag.pipeline.prompt.STYLES`; ``None``: the generator family's) and the system prompt
    (``None``: the style's).

    Multi-hop (:mod:`unirag.pipeline.iterative`): ``hops`` retrievals per question (1: single-shot;
    ``SamplingParams.hops`` overrides it per request), ``k`` passages per hop, at most
    ``max_passages`` in all (``None``: hops x k) and ``max_prompt_tokens`` tokens of the final prompt
    (``None``: no limit); the reader writes each follow-up query in at most ``followup_tokens``
    tokens, seeing the first ``followup_words`` words of each passage read; with ``followup_anchor``
    the text searched is the question followed by the follow-up (else the follow-up alone).

    ``hop_mode``: ``followup`` (the above) or ``plan`` (the default, measured better;
    :mod:`unirag.pipeline.plan`): after hop 0 the reader lists the articles the question needs, from
    ``plan_shots`` worked examples per plan and ``plan_samples`` plans merged, at most
    ``plan_entries`` names, ``plan_tokens`` tokens per plan, no ``plan_no_repeat``-token n-gram twice
    in a plan (0: off); with ``plan_indexed`` the examples show only the articles the index holds
    (an example without any is left out; all shown whole when the index holds none); each name is
    a retrieval of ``plan_k`` passages (a name no passage is titled with is searched alone, or
    after the question with ``plan_anchor``), up to ``hops`` retrievals; the rest of ``max_passages`` comes from the question's own
    ranking. ``plan_examples``: a JSONL file of ``{"question", "articles"}`` (``None``: the packaged
    FanOutQA training-split examples)."""

    k: int = 3
    max_passage_words: int = 120
    system_prompt: str | None = None
    prompt_style: str | None = None
    hops: int = 1
    max_passages: int | None = None
    max_prompt_tokens: int | None = None
    followup_tokens: int = 24
    followup_words: int = 24
    followup_anchor: bool = True
    hop_mode: str = "plan"
    plan_examples: str | None = None
    plan_shots: int = 4
    plan_samples: int = 2
    plan_entries: int = 16
    plan_tokens: int = 128
    plan_no_repeat: int = 0
    plan_indexed: bool = True
    plan_anchor: bool = False
    plan_k: int = 1


class PipelineEngine(BatchStreaming):
    """Retrieve-then-read over any retriever (dense, BM25, hybrid) and any generator."""

    name = "pipeline"

    def __init__(self, retriever: Any, generator: Any, config: PipelineConfig | None = None, kind: str = "dense"):
        import threading

        self.retriever = retriever
        self.generator = generator
        self.config = config or PipelineConfig()
        self.kind = kind
        self._write_lock = threading.Lock()

    # --- the door's verbs ------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int) -> Any:
        """The retriever's top-``k`` for each query."""
        return self.retriever.search(list(queries), k)

    def swap_index(self, folder: str) -> None:
        """Search another index folder from now on (same kind of retriever, same encoder; the
        models stay loaded). The new retriever is opened and verified first, then installed by one
        assignment, so a search sees the old index or the new one, never a mix."""
        from unirag.retrieval.loader import load_retriever

        self.retriever = load_retriever(folder, self.kind, encoder=self._dense_encoder())

    def add_documents(self, passages: Any) -> dict[str, Any]:
        """Add passages (a passage whose id the index holds replaces it) to the index folder and
        search the new version from now on; returns the counts (see :func:`unirag.retrieval.update.update_index`)."""
        return self._update(add=passages)

    def delete_documents(self, ids: Any) -> dict[str, Any]:
        """Remove passages by id from the index folder (unknown ids: an error, nothing changed)."""
        return self._update(delete=ids)

    def _update(self, add: Any = (), delete: Any = ()) -> dict[str, Any]:
        from unirag.retrieval.update import update_index

        with self._write_lock:  # one writer at a time; readers go on with the old retriever
            if self.retriever is None or getattr(self.retriever, "path", None) is None:
                from unirag.config.base import ConfigError

                raise ConfigError(f"engine {self.name!r} has no index folder to update")
            folder = self.retriever.path
            res = update_index(folder, self._dense_encoder(), add=add, delete=delete)
            self.swap_index(str(folder))  # opened and verified, then installed by one assignment
        return res.to_dict()

    def planner(self) -> Any:
        """The plan writer of ``hop_mode = "plan"`` (built once: the examples embedded with the
        retriever's query encoder when it has one)."""
        from unirag.pipeline.plan import Planner, indexed_examples, packaged_examples, read_examples

        cfg = self.config
        # indexed examples depend on the index: the key holds its store itself (an id could be reused)
        key = (cfg.plan_examples, cfg.plan_shots, cfg.plan_samples, cfg.plan_entries, cfg.plan_tokens,
               cfg.plan_no_repeat, self.retriever.store if cfg.plan_indexed else None)
        if getattr(self, "_planner", (None, None))[0] != key:
            examples = read_examples(cfg.plan_examples) if cfg.plan_examples else packaged_examples()
            if cfg.plan_indexed:  # an index of other documents holds none: the examples stay whole
                examples = indexed_examples(examples, self.titles()) or examples
            dense = self.retriever if hasattr(self.retriever, "embed_queries") else None
            self._planner = (key, Planner(examples, dense.embed_queries if dense is not None else None,
                                          cfg.plan_shots, cfg.plan_samples, cfg.plan_entries, cfg.plan_tokens,
                                          cfg.plan_no_repeat))
        return self._planner[1]

    def titles(self) -> dict[str, str]:
        """Lower-cased passage title -> passage id of the index searched now (built once per index)."""
        from unirag.pipeline.plan import title_lookup

        store = self.retriever.store
        if getattr(self, "_titles", (None, None))[0] is not store:
            self._titles = (store, title_lookup(store))
        return self._titles[1]

    def _dense_encoder(self) -> Any:
        r = self.retriever
        dense = r if hasattr(r, "encoder") else next((x for x in getattr(r, "retrievers", [])
                                                      if hasattr(x, "encoder")), None)
        return dense.corpus_encoder if dense is not None else None

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
            # closed book: the question alone in the chat template
            prompt = self.render_prompt(q, passages) if res is not None else self.generator.chat_prompt(q)
            trace = [TraceStep(q, None, [p.id for p in passages], scores, [p.id for p in passages])] if res else []
            ans = Answer(q, "", make_sources(passages, scores), trace, engine=self.name,
                         timings=Timings(retrieval=t_ret))
            out.append((prompt, ans))
        return out

    def render_prompt(self, question: str, passages: Sequence[Any]) -> str:
        """The reader's prompt for ``question`` over ``passages`` (numbered ``[1]``.. in order): the
        prompt :meth:`prepare` builds (the generator family's prompt style); multi-hop answers from it
        over the passages of every hop."""
        style = style_for(self.generator, self.config.prompt_style)
        system = style.system if self.config.system_prompt is None else self.config.system_prompt
        return self.generator.chat_prompt(style.user_turn(question, passages, self.config.max_passage_words),
                                          system=system)

    def admits(self, params: SamplingParams) -> bool:
        """A single-shot question joins a running batch of a causal generator (multi-hop questions
        decode their follow-up queries first, and seq2seq readers decode one by one)."""
        from unirag.pipeline.iterative import hops_of

        return (self.generator is not None and not self.generator.is_seq2seq
                and (self.retriever is None or hops_of(self.config, params) <= 1))

    def stream_batch(self, questions: Sequence[str], params: SamplingParams | Sequence[SamplingParams],
                     cancelled: Callable[[int], bool] | None = None,
                     admit: Callable[[], Sequence[tuple[str, SamplingParams]]] | None = None,
                     ) -> Iterator[tuple[int, Event]]:
        """``(question index, event)`` pairs: every question's retrieval event (multi-hop: one per
        hop, as it happens), then the text of all questions as their rows decode together, each
        question's ``Finished`` when its row ends. ``params`` is one for all or one per question;
        ``cancelled(i)`` ends question ``i`` early; ``admit()``, asked between decoding steps,
        returns new single-shot questions that are retrieved for and join the running rows."""
        from unirag.pipeline.iterative import hops_of, run_hops

        per = [params] * len(questions) if isinstance(params, SamplingParams) else list(params)
        clock = Clock()
        groups: dict[int | None, list[int]] = {}
        multi = [i for i, p in enumerate(per) if self.retriever is not None and hops_of(self.config, p) > 1]
        hopped = set(multi)
        for i, p in enumerate(per):  # questions asking for the same k share one search
            if i not in hopped:
                groups.setdefault(p.k, []).append(i)
        prepared: list[Any] = [None] * len(questions)
        if multi:  # multi-hop: the reader writes follow-up queries (pipeline/iterative.py)
            hopping = run_hops(self, [questions[i] for i in multi], [per[i] for i in multi])
            while True:
                try:
                    j, ev = next(hopping)
                except StopIteration as stop:
                    for i, item in zip(multi, stop.value):
                        prepared[i] = item
                    break
                yield multi[j], ev
        for k, idx in groups.items():
            for i, item in zip(idx, self.prepare([questions[i] for i in idx], per[idx[0]])):
                prepared[i] = item
        for i, (_, ans) in enumerate(prepared):
            if ans.trace and i not in hopped:
                yield i, RetrievalEvent(ans.trace[0], ans.sources)
        ids = [self.generator.encode_prompt(p) for p, _ in prepared]
        first: dict[int, float] = {}
        pieces: dict[int, list[str]] = {i: [] for i in range(len(questions))}
        gen0 = clock.total()
        started = {i: gen0 for i in range(len(questions))}  # generation start of each question
        arrived: dict[int, float] = {}
        joined: list[tuple[int, Event]] = []  # retrieval events of admitted questions, not yet yielded

        def admit_rows() -> list[tuple[list[int], SamplingParams]]:
            rows = []
            for q, p in admit() if admit is not None else ():
                t0 = clock.total()
                item = self.prepare([q], p)[0]
                i = len(prepared)
                prepared.append(item)
                ids.append(self.generator.encode_prompt(item[0]))
                pieces[i], started[i], arrived[i] = [], clock.total(), t0
                item[1].timings = Timings(started[i] - t0)
                if item[1].trace:
                    joined.append((i, RetrievalEvent(item[1].trace[0], item[1].sources)))
                rows.append((ids[i], p))
            return rows

        if self.generator.is_seq2seq:
            events: Iterator[Any] = self._seq2seq_events([p for p, _ in prepared], per, cancelled)
        else:
            events = self.generator.decoder().stream(ids, per, cancelled, admit_rows if admit is not None else None)
        from unirag.models.decoding import DoneEvent, TextEvent

        style = style_for(self.generator, self.config.prompt_style)
        for ev in events:
            while joined:
                yield joined.pop(0)
            i = ev.index
            if isinstance(ev, TextEvent) and ev.text:
                first.setdefault(i, clock.total())
                pieces[i].append(ev.text)
                yield i, TextDelta(ev.text)
            elif isinstance(ev, DoneEvent):
                ans = prepared[i][1]
                ans.text = "".join(pieces[i]).strip()
                ans.short = style.short_answer(ans.text)
                ans.ground()  # cited sources and abstention
                if style.attribute and not ans.cited and not ans.abstained:
                    found = style.attribution(ans.short, ans.sources)
                    if found:  # the markers join the text (and the stream) as its last piece
                        marks = (" " if ans.text else "") + "".join(f"[{n}]" for n in found)
                        yield i, TextDelta(marks)
                        ans.text += marks
                        ans.ground()
                        ans.extra["citations"] = "attributed: the cited passages contain the answer"
                ans.finish_reason = ev.output.finish_reason
                ans.usage = Usage(len(ids[i]), len(ev.output.token_ids))
                now = clock.total()
                t0 = arrived.get(i, 0.0)  # a question that joined a running batch counts from then
                ans.timings = Timings(ans.timings.retrieval, now - started[i], now - t0,
                                      first[i] - t0 if i in first else None)
                yield i, Finished(ans)

    def _seq2seq_events(self, prompts: list[str], per: list[SamplingParams],
                        cancelled: Callable[[int], bool] | None) -> Iterator[Any]:
        from unirag.models.decoding import DoneEvent, TextEvent

        for i, (prompt, p) in enumerate(zip(prompts, per)):
            if cancelled is not None and cancelled(i):
                continue
            out = self.generator.generate_batch([prompt], p)[0]
            out.index = i
            yield TextEvent(i, out.text)
            yield DoneEvent(i, out)
