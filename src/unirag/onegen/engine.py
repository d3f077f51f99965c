"""The OneGen engine behind the door: one model writes the answer and, whenever it emits the
query token, retrieves with that token's hidden state; passages join the KV cache and decoding
goes on (:mod:`unirag.models.decoding`). Each source carries the generation step it was
retrieved at."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from unirag.engine import BatchStreaming, Clock, make_sources
from unirag.outputs import Answer, Event, Finished, RetrievalEvent, TextDelta, Timings, TraceStep, Usage, \
    extract_answer
from unirag.sampling_params import SamplingParams

PASSAGE_WORDS = 48  # a model config without ``passage_words`` (inserted passages are cut like its training data)
#: ``no_repeat_ngram`` when a request leaves it unset: loops of a small model break (measured on the
#: held-out FanOutQA questions, docs/onegen.md "Inference-only probes"), inserted passages still copy.
NO_REPEAT_NGRAM = 3


class OneGenEngine(BatchStreaming):
    """OneGen QA over a OneGen model and its own document index (a dense retriever whose
    embedding function is the model). ``k`` defaults to 1 passage per query token, passages
    are cut to the model config's ``passage_words`` (as in its training data) and no 3-token
    sequence is generated twice (``no_repeat_ngram``) unless the params say otherwise."""

    name = "onegen"

    def __init__(self, model: Any, retriever: Any, model_dir: str | Path | None = None):
        import threading

        self.model = model
        self.retriever = retriever
        self.model_dir = model_dir
        self._write_lock = threading.Lock()

    # --- the door's verbs ------------------------------------------------------------------
    def search(self, queries: Sequence[str], k: int) -> Any:
        """Top-``k`` by the model's own query vectors (question, then the query token)."""
        return self.retriever.search(list(queries), k)

    def swap_index(self, folder: str) -> None:
        """Retrieve from another OneGen index folder of the same model (no reload)."""
        from unirag.onegen.docindex import open_onegen_index

        name = self.retriever.index.manifest.encoder if self.retriever is not None else None
        self.retriever = open_onegen_index(folder, self.model, model_name=name)

    def add_documents(self, passages: Any) -> dict[str, Any]:
        """Add (or replace, by id) passages in the model's index, embedded by the model itself
        (its ``OneGenEncoder``); retrieval uses the new version from now on."""
        return self._update(add=passages)

    def delete_documents(self, ids: Any) -> dict[str, Any]:
        """Remove passages by id from the model's index (unknown ids: an error, nothing changed)."""
        return self._update(delete=ids)

    def _update(self, add: Any = (), delete: Any = ()) -> dict[str, Any]:
        from unirag.retrieval.update import update_index

        with self._write_lock:
            if self.retriever is None or self.retriever.path is None:
                from unirag.config.base import ConfigError

                raise ConfigError("this OneGen engine has no index folder to update")
            folder = self.retriever.path
            res = update_index(folder, self.retriever.encoder, add=add, delete=delete, batch_size=16)
            self.swap_index(str(folder))
        return res.to_dict()

    def info(self) -> dict[str, Any]:
        """Model folder, index folder and size."""
        r = self.retriever
        return {"engine": self.name, "model": str(self.model_dir or ""), "index": str(getattr(r, "path", "") or ""),
                "passages": len(r.store) if r is not None else 0}

    def _params(self, params: SamplingParams) -> SamplingParams:
        changes: dict[str, Any] = {}
        if params.k is None:
            changes["k"] = 1
        if params.max_passage_words is None:
            changes["max_passage_words"] = getattr(getattr(self.model, "config", None), "passage_words", PASSAGE_WORDS)
        if params.no_repeat_ngram is None:
            changes["no_repeat_ngram"] = NO_REPEAT_NGRAM
        return params.with_(**changes) if changes else params

    def _decoder(self) -> Any:
        from unirag.models.decoding import Decoder

        return Decoder(self.model, self.retriever)

    def _prompt(self, question: str) -> str:
        from unirag.onegen.qa import qa_prompt

        return qa_prompt(self.model, question)

    def _answer(self, question: str, out: Any, passages: dict[str, Any], n_prompt: int, seconds: float,
                first: float | None = None) -> Answer:
        from unirag.onegen.qa import tail_after_retrieval

        sources, trace = [], []
        for r in out.trace:
            got = [passages[pid] for pid in r.inserted]
            sc = [r.scores[r.ids.index(pid)] for pid in r.inserted]
            sources += make_sources(got, sc, step=r.step, start=len(sources) + 1)
            trace.append(TraceStep("", r.step, list(r.ids), list(r.scores), list(r.inserted)))
        tail = tail_after_retrieval(out, self.model.tokenizer)
        retrieval_tokens = sum(r.n_tokens for r in out.trace)
        return Answer(question, out.text.strip(), sources, trace,
                      Usage(n_prompt + retrieval_tokens, len(out.token_ids)),
                      Timings(0.0, seconds, seconds, first), engine=self.name, finish_reason=out.finish_reason,
                      short=extract_answer(tail) or extract_answer(out.text))

    def admits(self, params: SamplingParams) -> bool:
        """Every question can join a running batch (its prompt prefills while the others decode)."""
        return True

    def stream_batch(self, questions: Sequence[str], params: SamplingParams | Sequence[SamplingParams],
                     cancelled: Callable[[int], bool] | None = None,
                     admit: Callable[[], Sequence[tuple[str, SamplingParams]]] | None = None,
                     ) -> Iterator[tuple[int, Event]]:
        """``(question index, event)`` pairs as all questions decode together (ragged rows, retrieval
        inside the loop); ``params`` one for all or one per question; ``cancelled(i)`` ends one early;
        ``admit()``, asked between decoding steps, returns new questions that join the running rows."""
        from unirag.models.decoding import DoneEvent, RetrievalEvent as LoopRetrieval, TextEvent

        per = [params] * len(questions) if isinstance(params, SamplingParams) else list(params)
        questions = list(questions)
        clock = Clock()
        dec = self._decoder()
        prompts = dec.encode([self._prompt(q) for q in questions])
        passages: dict[str, Any] = {}
        first: dict[int, float] = {}
        arrived = [0.0] * len(questions)
        n_sources = [0] * len(questions)

        def admit_rows() -> list[tuple[list[int], SamplingParams]]:
            rows = []
            for q, p in admit() if admit is not None else ():
                questions.append(q)
                prompts.append(dec.encode([self._prompt(q)])[0])
                arrived.append(clock.total())
                n_sources.append(0)
                rows.append((prompts[-1], self._params(p)))
            return rows

        for ev in dec.stream(prompts[: len(per)], [self._params(p) for p in per], cancelled,
                             admit_rows if admit is not None else None):
            i = ev.index
            if isinstance(ev, TextEvent) and ev.text:
                first.setdefault(i, clock.total() - arrived[i])
                yield i, TextDelta(ev.text)
            elif isinstance(ev, LoopRetrieval):
                r = ev.retrieval
                passages.update({p.id: p for p in ev.passages})
                sc = [r.scores[r.ids.index(p.id)] for p in ev.passages]
                srcs = make_sources(ev.passages, sc, step=r.step, start=n_sources[i] + 1)
                n_sources[i] += len(srcs)
                yield i, RetrievalEvent(TraceStep("", r.step, list(r.ids), list(r.scores), list(r.inserted)), srcs)
            elif isinstance(ev, DoneEvent):
                yield i, Finished(self._answer(questions[i], ev.output, passages, len(prompts[i]),
                                               clock.total() - arrived[i], first.get(i)))
