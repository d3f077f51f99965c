"""Convert data sets users bring into the OneGen training schema (``unirag.onegen.data``).

* HotpotQA and 2WikiMultiHopQA (same layout: ``question``, ``answer``, ``context`` =
  ``[[title, [sentences]]]``, ``supporting_facts`` = ``[[title, sentence_index]]``): one
  retrieval token per supporting page, in supporting-fact order; its positives are that page's
  supporting-fact sentences (documents ``"title#i"`` = ``"title. sentence"``), its hard negatives the
  first sentences of the distractor pages. The assistant turn is ``[RQ]<passage>supporting
  sentences</passage>`` per page, then the answer.
* Self-RAG (``instruction``, optional ``input``, ``output`` with ``[Retrieval]<paragraph>...
  </paragraph>``): the query token goes right after each ``[Retrieval]`` and the paragraph becomes
  the inserted passage and the positive document (id = ``"p:" + sha1(text)[:16]``); other reflection
  tokens stay as text unless ``keep_reflection=False``.

Each converter writes ``train.jsonl`` and ``docs.jsonl`` into a folder and returns counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import OneGenDataError, OneGenExample, Retrieval, write_documents, write_examples

REFLECTION = re.compile(r"\[(?:No Retrieval|Continue to Use Evidence|Relevant|Irrelevant|Fully supported|"
                        r"Partially supported|No support / Contradictory|Utility:\d)\]")
PARAGRAPH = re.compile(r"\[Retrieval\]\s*<paragraph>(.*?)</paragraph>", re.S)


def read_records(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line or index, record)`` from a JSON array file or a JSONL file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OneGenDataError(f"{path}: invalid JSON ({exc.msg})") from None
        yield from ((i + 1, r) for i, r in enumerate(data))
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise OneGenDataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def _need(rec: dict, key: str, where: str) -> Any:
    if key not in rec:
        raise OneGenDataError(f"{where}: field '{key}': missing")
    return rec[key]


def convert_multihop(path: str | os.PathLike, out: str | os.PathLike, config: OneGenConfig | None = None,
                     max_negatives: int = 3) -> dict[str, int]:
    """HotpotQA / 2WikiMultiHopQA file → ``out/train.jsonl`` + ``out/docs.jsonl`` (see module docstring)."""
    config = config or OneGenConfig()
    q_tok, ps, pe = config.token("query"), config.passage_start, config.passage_end
    docs: dict[str, tuple[str, str]] = {}
    examples = []
    for n, rec in read_records(path):
        where = f"{path}:{n}"
        context = {title: sents for title, sents in _need(rec, "context", where)}
        facts = _need(rec, "supporting_facts", where)
        pages: dict[str, list[int]] = {}
        for title, sid in facts:
            if title not in context or not 0 <= sid < len(context[title]):
                raise OneGenDataError(f"{where}: field 'supporting_facts': [{title!r}, {sid}] is not in 'context'")
            pages.setdefault(title, []).append(sid)
        if not pages:
            continue
        for title, sents in context.items():
            for i, s in enumerate(sents):
                docs.setdefault(f"{title}#{i}", (title, s.strip()))
        distractors = [f"{t}#0" for t, s in context.items() if t not in pages and s][:max_negatives]
        parts, rets = [], []
        for title, sids in pages.items():
            text = " ".join(context[title][i].strip() for i in sids)
            parts.append(f"{q_tok}{ps}{title}. {text}{pe}")
            rets.append(Retrieval([f"{title}#{i}" for i in sids], list(distractors)))
        answer = str(_need(rec, "answer", where))
        examples.append(OneGenExample(
            messages=[{"role": "user", "content": str(_need(rec, "question", where))},
                      {"role": "assistant", "content": "".join(parts) + answer}],
            retrievals=rets, id=str(rec.get("_id", rec.get("id", n)))))
    return _write(out, examples, docs)


def convert_selfrag(path: str | os.PathLike, out: str | os.PathLike, config: OneGenConfig | None = None,
                    keep_reflection: bool = True) -> dict[str, int]:
    """Self-RAG data → ``out/train.jsonl`` + ``out/docs.jsonl`` (see module docstring)."""
    config = config or OneGenConfig()
    q_tok, ps, pe = config.token("query"), config.passage_start, config.passage_end
    docs: dict[str, tuple[str, str]] = {}
    examples = []
    for n, rec in read_records(path):
        where = f"{path}:{n}"
        instruction = str(_need(rec, "instruction", where))
        output = str(_need(rec, "output", where))
        user = instruction + (f"\n\n{rec['input']}" if rec.get("input") else "")
        rets: list[Retrieval] = []

        def swap(m: re.Match) -> str:
            text = m.group(1).strip()
            pid = "p:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
            docs.setdefault(pid, ("", text))
            rets.append(Retrieval([pid]))
            return f"[Retrieval]{q_tok}{ps}{text}{pe}"

        assistant = PARAGRAPH.sub(swap, output)
        if not keep_reflection:
            assistant = REFLECTION.sub("", assistant.replace("[Retrieval]", "")).strip()
        examples.append(OneGenExample(messages=[{"role": "user", "content": user},
                                                {"role": "assistant", "content": assistant}],
                                      retrievals=rets, id=str(rec.get("id", n))))
    return _write(out, examples, docs)


def _write(out: str | os.PathLike, examples: list[OneGenExample], docs: dict[str, tuple[str, str]]) -> dict[str, int]:
    out = Path(out)
    write_documents(docs, out / "docs.jsonl")
    n = write_examples(examples, out / "train.jsonl")
    return {"examples": n, "retrievals": sum(len(e.retrievals) for e in examples), "documents": len(docs)}
