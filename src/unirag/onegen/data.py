"""The OneGen training-data schema (JSONL) and its validation.

One example per line::

    {"id": "q17",                                   # optional
     "messages": [{"role": "user", "content": "Who directed Alien?"},
                  {"role": "assistant",
                   "content": "[RQ]<passage>Alien (film). Alien is a 1979 ...</passage>Ridley Scott"}],
     "retrievals": [{"positives": ["Alien (film)"], "negatives": ["Aliens (film)"]}]}

``retrievals[i]`` belongs to the i-th retrieval token (query ``[RQ]`` or mention ``[RM]``) in the
assistant messages, in order: ``positives`` (document ids, required; an empty list trains the token
by the LM loss alone), ``negatives`` (hard-negative ids, optional) and ``answer_loss`` (optional,
default ``true``; ``false``: the text written after this retrieval's passage, up to the next line
break, retrieval token or the end of the message, carries no LM loss: an answer the passage does
not support). Document ids refer to a document store: a corpus
JSONL (``{"id", "text", "title"?}`` per line), TSV, a ``DocStore`` folder or an index folder.
Text between ``passage_start`` and ``passage_end`` markers is inserted context (no loss).
Every error names the file, the line and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unirag.corpus.jsonl import iter_jsonl
from unirag.corpus.passage import CorpusError
from unirag.onegen.config import OneGenConfig


class OneGenDataError(CorpusError):
    """Invalid OneGen training data; the message names the file, line and field."""


@dataclass
class Retrieval:
    """The supervision of one retrieval token: positive and hard-negative document ids, and whether
    the reply written after its passage carries LM loss (``answer_loss``)."""

    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    role: str = "query"
    answer_loss: bool = True


@dataclass
class OneGenExample:
    """A chat (``messages``) whose assistant turns hold retrieval tokens, one ``Retrieval`` each."""

    messages: list[dict[str, str]]
    retrievals: list[Retrieval]
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form of the schema."""
        out: dict[str, Any] = {"id": self.id} if self.id else {}
        out["messages"] = self.messages
        out["retrievals"] = [{"positives": r.positives, **({"negatives": r.negatives} if r.negatives else {}),
                              **({} if r.answer_loss else {"answer_loss": False})} for r in self.retrievals]
        return out


def retrieval_marks(text: str, config: OneGenConfig, lo: int = 0, hi: int | None = None) -> list[tuple[int, str]]:
    """``(character position, role)`` of each retrieval token (query, mention) in ``text[lo:hi]``, in order."""
    hi = len(text) if hi is None else hi
    found = []
    for role in config.retrieval_roles:
        tok = config.token(role)
        start = text.find(tok, lo, hi)
        while start >= 0:
            found.append((start, role))
            start = text.find(tok, start + len(tok), hi)
    return sorted(found)


def retrieval_roles_in(text: str, config: OneGenConfig) -> list[str]:
    """Roles of the retrieval tokens (query, mention) occurring in ``text``, in order."""
    return [role for _, role in retrieval_marks(text, config)]


def parse_example(row: Any, config: OneGenConfig, docs: Mapping[str, Any] | None, where: str) -> OneGenExample:
    """Validate one decoded JSON line; ``where`` is ``file:line`` for the error messages."""

    def fail(fieldname: str, msg: str) -> OneGenDataError:
        return OneGenDataError(f"{where}: field '{fieldname}': {msg}")

    if not isinstance(row, dict):
        raise OneGenDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    unknown = sorted(set(row) - {"id", "messages", "retrievals"})
    if unknown:
        raise fail(unknown[0], "unknown field (known: id, messages, retrievals)")
    msgs = row.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise fail("messages", "required: a non-empty list of {role, content}")
    roles: list[str] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
            "system", "user", "assistant"
        ):
            raise fail(f"messages[{i}]", "needs 'role' (system/user/assistant) and string 'content'")
        if m["role"] == "assistant":
            roles += retrieval_roles_in(m["content"], config)
        elif retrieval_roles_in(m["content"], config):
            raise fail(f"messages[{i}].content", "retrieval tokens may appear only in assistant messages")
    if not any(m["role"] == "assistant" for m in msgs):
        raise fail("messages", "no assistant message")
    rets = row.get("retrievals", [])
    if not isinstance(rets, list):
        raise fail("retrievals", "must be a list")
    if len(rets) != len(roles):
        tokens = "/".join(config.token(r) for r in config.retrieval_roles)
        raise fail("retrievals", f"{len(rets)} entries but the assistant text has {len(roles)} retrieval "
                                 f"token(s) ({tokens})")
    out = []
    for i, (r, role) in enumerate(zip(rets, roles)):
        if not isinstance(r, dict):
            raise fail(f"retrievals[{i}]", "must be an object with 'positives' (and optional 'negatives')")
        bad = sorted(set(r) - {"positives", "negatives", "answer_loss"})
        if bad:
            raise fail(f"retrievals[{i}].{bad[0]}", "unknown field")
        pos, neg = r.get("positives"), r.get("negatives", [])
        if not isinstance(pos, list):
            raise fail(f"retrievals[{i}].positives", "required: a list of document ids (empty: LM loss only)")
        if not isinstance(neg, list):
            raise fail(f"retrievals[{i}].negatives", "must be a list of document ids")
        for name, ids in (("positives", pos), ("negatives", neg)):
            for j, pid in enumerate(ids):
                if not isinstance(pid, str):
                    raise fail(f"retrievals[{i}].{name}[{j}]", f"document id must be a string, got {pid!r}")
                if docs is not None and pid not in docs:
                    raise fail(f"retrievals[{i}].{name}[{j}]", f"unknown document id {pid!r}")
        answer_loss = r.get("answer_loss", True)
        if not isinstance(answer_loss, bool):
            raise fail(f"retrievals[{i}].answer_loss", f"must be true or false, got {answer_loss!r}")
        out.append(Retrieval([str(p) for p in pos], [str(n) for n in neg if n not in pos], role, answer_loss))
    return OneGenExample(messages=msgs, retrievals=out, id=str(row.get("id", "")))


def load_examples(path: str | os.PathLike, config: OneGenConfig | None = None,
                  docs: Mapping[str, Any] | None = None) -> list[OneGenExample]:
    """Read and validate a OneGen JSONL file; ``docs`` (id → text) checks every document id."""
    config = config or OneGenConfig()
    path = Path(path)
    out = []
    try:
        for lineno, row in iter_jsonl(path):
            out.append(parse_example(row, config, docs, f"{path}:{lineno}"))
    except OneGenDataError:
        raise
    except CorpusError as exc:  # bad JSON or a missing file, with file and line
        raise OneGenDataError(str(exc)) from None
    if not out:
        raise OneGenDataError(f"{path}: no examples")
    return out


def write_examples(examples: Iterable[OneGenExample], path: str | os.PathLike) -> int:
    """Write examples as JSONL; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def load_documents(path: str | os.PathLike) -> dict[str, str]:
    """Document id → text to embed (``"title. text"``) from a corpus file, a ``DocStore`` folder or an
    index folder (its ``docs/``)."""
    from unirag.corpus import DocStore, read_corpus
    from unirag.index.folder import IndexFolder

    path = Path(path)
    if path.is_dir() and (IndexFolder(path).docs_dir / "store.json").is_file():
        path = IndexFolder(path).docs_dir
    if path.is_dir() and (path / "store.json").is_file():
        store = DocStore(path)
        try:
            return {p.id: p.contents for p in store}
        finally:
            store.close()
    return {p.id: p.contents for p in read_corpus(path)}


def write_documents(docs: Mapping[str, tuple[str, str]], path: str | os.PathLike) -> None:
    """Write id → (title, text) as a corpus JSONL readable by :func:`load_documents`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for pid, (title, text) in docs.items():
            fh.write(json.dumps({"id": pid, "title": title, "text": text}, ensure_ascii=False) + "\n")



def training_positives(train_file: str | os.PathLike) -> set[str]:
    """Document ids that are a retrieval positive of some example in a OneGen training file
    (entity ids of linking examples excluded)."""
    from unirag.corpus.jsonl import iter_jsonl
    from unirag.onegen.datasets import ENTITY_PREFIX

    out: set[str] = set()
    for _, row in iter_jsonl(train_file):
        for ret in row.get("retrievals", []):
            out.update(p for p in ret.get("positives", []) if not p.startswith(ENTITY_PREFIX))
    return out
