"""Multi-hop retrieval for the pipeline engine (in the manner of self-ask / IRCoT).

Hop 0 retrieves ``k`` passages for the question. Then, while the budget lasts, the reader (the
pipeline's own generator, greedy) reads the question, the passages found so far (titles and
their first words) and the searches already made, and writes the next search query, or ``DONE``;
the retriever runs again for the question followed by that query (``followup_anchor``; measured
better than the follow-up alone with a small reader, whose follow-ups often drift) and its best
``k`` passages not read yet are added. The
budget: ``hops`` retrievals, ``max_passages`` passages, ``max_prompt_tokens`` tokens of the final
prompt. Finally the reader answers the original question from every passage read, numbered
``[1]..[n]`` across hops in the order they were found, so the answer can cite any hop.

The questions of a batch go through each hop together: one batched search and one
``generate_batch`` call per hop over the questions still searching. Each retrieval is a
:class:`~unirag.outputs.TraceStep` (``query`` = the text searched, ``step`` = the hop), each
source keeps its hop in ``Source.meta["hop"]``, and the reader's queries are in
``Answer.extra["hops"]``.

With ``hop_mode = "plan"`` (:mod:`unirag.pipeline.plan`) the reader writes no follow-ups: after hop
0 it lists, once, the articles the question needs (from worked examples of similar questions); each
name is a further retrieval of ``plan_k`` passages (the passage titled with the name first; a name
without such a passage is searched alone, or after the question with ``plan_anchor``),
up to ``hops`` retrievals in all, and whatever the passage budget has left is filled from the question's
own ranking, so the plan never reads fewer of the question's best passages than it has room for.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from unirag.corpus.passage import Passage
from unirag.engine import Clock, hits
from unirag.outputs import Answer, RetrievalEvent, Source, Timings, TraceStep
from unirag.sampling_params import SamplingParams

#: The follow-up instruction: the reader's only job between hops is to name the next search.
FOLLOWUP_SYSTEM = "You decide what to search for next to answer a question. Reply with a search query only."
FOLLOWUP_ASK = ("What should be searched next to answer the question? Reply with one short search query "
                "(for example a name from the passages and what the question asks about it), or DONE if "
                "the passages already answer the question.")
DONE = "DONE"


def followup_prompt(question: str, passages: Sequence[Passage], queries: Sequence[str], words: int = 24) -> str:
    """The user turn that asks the reader for the next search: the question, the passages read so
    far (title and first ``words`` words), the searches already made, the instruction."""
    from unirag.pipeline.prompt import clip_words

    read = "\n".join(f"- {p.title}: {clip_words(p.text, words)}" for p in passages) or "(nothing yet)"
    done = "\n".join(f"- {q}" for q in queries)
    return (f"Question: {question}\n\nPassages read so far:\n{read}\n\nSearches made so far:\n{done}\n\n"
            f"{FOLLOWUP_ASK}\nSearch query:")


_LEAD = re.compile(r"^\s*(?:search query|query|search|next search|follow-up)\s*[:：]\s*", re.IGNORECASE)


def parse_followup(text: str) -> str | None:
    """The search query in the reader's reply (its first non-empty line, cue words and quotes
    removed); ``None`` when it says ``DONE`` or writes nothing usable."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = _LEAD.sub("", line).strip().strip('"\'“”`').strip()
    if not line or re.match(r"^done\b", line, re.IGNORECASE) or not re.search(r"\w", line):
        return None
    return line


@dataclass
class HopBudget:
    """How far one question may go: ``hops`` retrievals, ``per_hop`` passages each, ``max_passages``
    in all, ``max_prompt_tokens`` of the final prompt (``None``: no limit)."""

    hops: int
    per_hop: int
    max_passages: int
    max_prompt_tokens: int | None = None


@dataclass
class _Question:
    """One question on its way through the hops."""

    question: str
    budget: HopBudget
    passages: list[Passage] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    hop_of: list[int] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    stopped: str = ""  # why the loop ended: hops, passages, tokens, done, exhausted
    tokens: int = 0  # final prompt tokens counted so far (prompt without passages + passage blocks)
    retrieval_s: float = 0.0
    followup_s: float = 0.0
    followup_prompt_tokens: int = 0
    followup_completion_tokens: int = 0

    @property
    def seen(self) -> set[str]:
        return {p.id for p in self.passages}

    def room(self) -> int:
        return min(self.budget.per_hop, self.room_left())

    def room_left(self) -> int:
        return self.budget.max_passages - len(self.passages)


def budget_of(config: Any, params: SamplingParams) -> HopBudget:
    """The budget of one request: ``params.hops`` (``None``: ``config.hops``), ``params.k`` passages
    per hop (``None``: ``config.k``), ``config.max_passages`` (``None``: hops x k; plan mode: hop
    0's k and ``plan_k`` per name) and ``config.max_prompt_tokens``."""
    hops = config.hops if getattr(params, "hops", None) is None else params.hops
    k = config.k if params.k is None else params.k
    if config.max_passages is not None:
        cap = config.max_passages
    elif getattr(config, "hop_mode", "followup") == "plan":
        cap = k + (hops - 1) * config.plan_k
    else:
        cap = hops * k
    return HopBudget(hops, k, cap, config.max_prompt_tokens)


def hops_of(config: Any, params: SamplingParams) -> int:
    """Retrievals a request asks for (1: the single-shot pipeline)."""
    return budget_of(config, params).hops


def run_hops(engine: Any, questions: Sequence[str], params: Sequence[SamplingParams]
             ) -> Generator[tuple[int, RetrievalEvent], None, list[tuple[str, Answer]]]:
    """Yields ``(question index, RetrievalEvent)`` as each hop's retrieval happens; returns
    ``(final prompt, answer skeleton)`` per question, like :meth:`PipelineEngine.prepare`."""
    gen = engine.generator
    states = [_Question(q, budget_of(engine.config, p)) for q, p in zip(questions, params)]
    for st in states:
        st.tokens = len(gen.encode_prompt(engine.render_prompt(st.question, [])))
    active = [i for i, st in enumerate(states) if st.budget.per_hop > 0 and st.budget.max_passages > 0]
    queries = {i: states[i].question for i in active}
    if getattr(engine.config, "hop_mode", "followup") == "plan":
        return (yield from _run_plan(engine, states, active))
    hop = 0
    while active:
        yield from _retrieve(engine, states, queries, hop)
        active = [i for i in active if _go_on(states[i], hop)]
        hop += 1
        if not active:
            break
        got = _followups(engine, states, active, hop)
        for i in active:
            if got[i] is None:
                states[i].stopped = "done"
        active = [i for i in active if got[i] is not None]
        anchor = getattr(engine.config, "followup_anchor", False)
        queries = {i: f"{states[i].question} {got[i]}" if anchor else got[i] for i in active}
    return [_prepared(engine, st) for st in states]


def _go_on(st: _Question, hop: int) -> bool:
    """Whether question ``st`` searches again after hop ``hop`` (records why not)."""
    if st.stopped:
        return False
    if hop + 1 >= st.budget.hops:
        st.stopped = "hops"
    elif len(st.passages) >= st.budget.max_passages:
        st.stopped = "passages"
    return not st.stopped


def _run_plan(engine: Any, states: list[_Question], active: list[int]
              ) -> Generator[tuple[int, RetrievalEvent], None, list[tuple[str, Answer]]]:
    """Hop 0, one plan per question, a retrieval per planned name, then the fill (see the module
    docstring)."""
    from unirag.pipeline.plan import title_key

    cfg = engine.config
    yield from _retrieve(engine, states, {i: states[i].question for i in active}, 0)
    active = [i for i in active if _go_on(states[i], 0)]
    names: dict[int, list[str]] = {}
    if active:
        clock = Clock()
        plans = engine.planner().plan(engine.generator, [states[i].question for i in active])
        share = clock.lap() / len(active)
        for i, (names[i], replies, ptok, ctok) in zip(active, plans):
            st = states[i]
            st.followup_s += share
            st.followup_prompt_tokens += ptok
            st.followup_completion_tokens += ctok
            st.replies += replies
    titles = engine.titles() if active else {}
    hop = 1
    while True:
        active = [i for i in active if hop - 1 < len(names[i])]
        if not active:
            break
        named = {i: names[i][hop - 1] for i in active}
        first = {i: titles[title_key(q)] for i, q in named.items() if title_key(q) in titles}
        # plan_anchor: a name without an article of its own is searched in the question's context
        queries = {i: q if i in first or not cfg.plan_anchor else f"{states[i].question} {q}"
                   for i, q in named.items()}
        yield from _retrieve(engine, states, queries, hop, room={i: min(cfg.plan_k, states[i].room_left())
                                                                 for i in active}, first=first)
        for i in active:
            if states[i].stopped == "exhausted":
                states[i].stopped = ""  # a name that found nothing new does not end the plan
        active = [i for i in active if _go_on(states[i], hop)]
        hop += 1
    fill = {i: st.question for i, st in enumerate(states) if st.budget.per_hop > 0 and st.room_left() > 0
            and st.stopped != "tokens"}
    if fill:  # the question's own ranking fills what the budget has left
        yield from _retrieve(engine, states, fill, hop, room={i: states[i].room_left() for i in fill})
    for st in states:
        if st.stopped == "exhausted" or not st.stopped:
            st.stopped = "plan"
    return [_prepared(engine, st) for st in states]


def _retrieve(engine: Any, states: list[_Question], queries: dict[int, str], hop: int,
              room: dict[int, int] | None = None, first: dict[int, str] | None = None,
              ) -> Generator[tuple[int, RetrievalEvent], None, None]:
    """One batched search for the queries of this hop; each question keeps the best hits it has
    not read yet, up to its room (``room[i]``, else :meth:`_Question.room`), and yields a
    retrieval event with its new sources. ``first[i]``: a passage id that ranks first (a title
    match), scored as the best hit."""
    idx = list(queries)
    room = room or {}
    first = first or {}
    clock = Clock()
    # deep enough that, after dropping what a question has read, its room can still be filled
    depth = max(room.get(i, states[i].room()) + len(states[i].passages) for i in idx)
    res = engine.retriever.search([queries[i] for i in idx], depth)
    share = clock.lap() / max(1, len(idx))
    tok = engine.generator.tokenizer
    words = engine.config.max_passage_words
    from unirag.pipeline.prompt import clip_words

    for j, i in enumerate(idx):
        st = states[i]
        st.retrieval_s += share
        passages, scores = hits(res, j)
        if i in first:
            rest = [(p, s) for p, s in zip(passages, scores) if p.id != first[i]]
            passages = [engine.retriever.store.get(first[i]), *(p for p, _ in rest)]
            scores = [float(scores[0]) if len(scores) else 0.0, *(s for _, s in rest)]
        seen, new, new_scores = st.seen, [], []
        for p, s in zip(passages, scores):
            if len(new) >= room.get(i, st.room()):
                break
            if p.id in seen or p.id in {x.id for x in new}:
                continue
            if st.budget.max_prompt_tokens is not None:
                block = len(tok(f"[{len(st.passages) + len(new) + 1}] {p.title}: {clip_words(p.text, words)}\n\n",
                                add_special_tokens=False)["input_ids"])
                if st.tokens + block > st.budget.max_prompt_tokens:
                    st.stopped = "tokens"
                    break
                st.tokens += block
            new.append(p)
            new_scores.append(s)
        if not new and not st.stopped:
            st.stopped = "exhausted"  # nothing unread left for this query
        start = len(st.passages) + 1
        st.passages += new
        st.scores += new_scores
        st.hop_of += [hop] * len(new)
        step = TraceStep(queries[i], hop, [p.id for p in passages], scores, [p.id for p in new])
        st.trace.append(step)
        if hop > 0:
            st.queries.append(queries[i])
        yield i, RetrievalEvent(step, _sources(new, new_scores, hop, start))


def _followups(engine: Any, states: list[_Question], active: list[int], hop: int) -> dict[int, str | None]:
    """One ``generate_batch`` over the active questions: each one's next search query (``None``:
    the reader said DONE or wrote nothing usable)."""
    gen, cfg = engine.generator, engine.config
    prompts = [gen.chat_prompt(followup_prompt(states[i].question, states[i].passages, states[i].queries,
                                               cfg.followup_words), system=FOLLOWUP_SYSTEM) for i in active]
    clock = Clock()
    outs = gen.generate_batch(prompts, SamplingParams(max_new_tokens=cfg.followup_tokens, stop=["\n"]))
    share = clock.lap() / max(1, len(active))
    got: dict[int, str | None] = {}
    for i, prompt, out in zip(active, prompts, outs):
        st = states[i]
        st.followup_s += share
        st.followup_prompt_tokens += len(gen.encode_prompt(prompt))
        st.followup_completion_tokens += len(out.token_ids)
        st.replies.append(out.text)
        got[i] = parse_followup(out.text)
    return got


def _sources(passages: Sequence[Passage], scores: Sequence[float], hop: int, start: int) -> list[Source]:
    return [Source(number=start + n, id=p.id, title=p.title, text=p.text, score=float(s),
                   meta=dict(p.meta) | {"hop": hop}) for n, (p, s) in enumerate(zip(passages, scores))]


def _prepared(engine: Any, st: _Question) -> tuple[str, Answer]:
    """The final prompt over every passage read (numbered across hops) and the answer skeleton."""
    sources = [Source(number=n, id=p.id, title=p.title, text=p.text, score=float(s), meta=dict(p.meta) | {"hop": h})
               for n, (p, s, h) in enumerate(zip(st.passages, st.scores, st.hop_of), 1)]
    ans = Answer(st.question, "", sources, st.trace, engine=engine.name,
                 timings=Timings(retrieval=st.retrieval_s),
                 extra={"hops": {"retrievals": len(st.trace), "queries": st.queries, "replies": st.replies,
                                 "stopped": st.stopped or "hops", "followup_seconds": round(st.followup_s, 6),
                                 "followup_prompt_tokens": st.followup_prompt_tokens,
                                 "followup_completion_tokens": st.followup_completion_tokens}})
    return engine.render_prompt(st.question, st.passages), ans
