"""The real default reader end to end, through ``unirag.RAG.load()`` defaults and ``unirag ask``:
it names the answer and cites the passage that holds it.

Slow: the first run converts the default generator and builds the default index (minutes on 2
cores); later runs reuse both from the cache.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rag():
    import unirag

    return unirag.RAG.load(progress=False)


def test_ask_penicillin_names_fleming_and_cites_his_passage():
    proc = subprocess.run([sys.executable, "-m", "unirag.cli.app", "ask", "Who discovered penicillin?", "--json"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    ans = json.loads(proc.stdout)
    assert "Fleming" in ans["answer"], ans["answer"]
    assert not ans["abstained"] and ans["cited"], ans
    first = ans["sources"][ans["cited"][0] - 1]
    assert first["id"] == "Alexander Fleming", (ans["answer"], [s["id"] for s in ans["sources"]])


def test_mona_lisa_still_names_leonardo(rag):
    import unirag

    ans = rag.ask("Who painted the Mona Lisa?", unirag.SamplingParams(max_new_tokens=64))
    assert "Leonardo" in ans.text, ans.text
    assert ans.sources[0].id == "Mona Lisa" and not ans.abstained


def test_the_default_reader_is_the_measured_one(rag):
    from unirag.models.registry import DEFAULT_GENERATOR

    assert rag.engine.generator.name == DEFAULT_GENERATOR
