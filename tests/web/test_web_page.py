"""The web page at ``/`` in a real browser: Debian's chromium driven by Playwright, against a real
server (uvicorn on a free loopback port) over a tiny random Llama and a tiny encoder's index.

Skips only when no chromium binary exists (CI installs it: ``.ci/run``). Nothing downloads a
browser: Playwright launches the system binary (``UNIRAG_CHROMIUM`` or ``chromium`` on PATH).
Screenshots go to the test's ``tmp_path`` and to ``runs/web-screenshots/``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = (shutil.which(os.environ.get("UNIRAG_CHROMIUM", "")) or shutil.which("chromium")
            or shutil.which("chromium-browser"))
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no chromium binary (apt-get install chromium); "
                                                     "the page test drives the system browser only")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "runs" / "web-screenshots"
MODEL = "unirag-pipeline"
QUESTION = "who painted the portrait"
TIMEOUT_MS = 60_000


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)
    return path


class _Server:
    """uvicorn in a background thread on a socket bound to a free loopback port."""

    def __init__(self, app, wait_ready: bool = True):
        import uvicorn

        self.wait_ready = wait_ready
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status = httpx.get(self.url + "/ready", timeout=2).status_code
                if status == 200 or (status == 503 and not self.wait_ready):
                    return self
            except httpx.HTTPError:
                pass
            if not self.thread.is_alive():
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"the server at {self.url} did not become ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_encoder_dir):
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.retrieval import build_index

    docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES]
    return build_index(docs, tmp_path_factory.mktemp("web") / "tiny-web-index", encoder=str(tiny_encoder_dir),
                       progress=False)


@pytest.fixture(scope="module")
def chatty_llama_dir(tmp_path_factory, smollm_tokenizer_dir) -> Path:
    """A tiny random Llama like ``tiny_llama_dir`` but with untied embeddings: its greedy text is
    words (the tied one repeats the prompt's last token, a new line, and answers empty text)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("chatty-llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rag(index_dir, chatty_llama_dir):
    import unirag

    return unirag.RAG.load(index_dir, engine="pipeline", generator=str(chatty_llama_dir), k=3, progress=False)


@pytest.fixture(scope="module")
def server(rag):
    from unirag.serve import create_app
    from unirag.serve.config import ServeConfig

    with _Server(create_app({"pipeline": rag}, ServeConfig())) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _open(page, server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#ready[data-state='ready']")
    page.wait_for_selector(f"#engine option[value='{MODEL}']", state="attached")


def _passages() -> dict[str, dict]:
    from tests.conftest import PASSAGES

    return {p["id"]: p for p in PASSAGES}


def _answer_text(page) -> str:
    return page.eval_on_selector("#answer", "a => a.textContent")


def test_the_page_is_served_with_its_files(server):
    import httpx

    html = httpx.get(server.url + "/")
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    for ref in ("static/app.css", "static/app.js"):
        assert ref in html.text
        assert httpx.get(f"{server.url}/{ref}").status_code == 200
    assert "http://" not in html.text and "https://" not in html.text  # nothing fetched from the network


def test_ask_streams_the_answer_with_clickable_sources(page, server, index_dir, tmp_path):
    import httpx

    _open(page, server)
    # the header: the index's name and size, the engines from /v1/models
    assert page.inner_text("#index-name") == Path(index_dir).name
    assert page.inner_text("#index-size") == "6 passages"
    assert page.eval_on_selector_all("#engine option", "os => os.map(o => o.value)") == [MODEL]

    # record every state of the answer's text while it streams
    page.evaluate("""() => {
        window.__partials = [];
        const a = document.getElementById('answer');
        new MutationObserver(() => window.__partials.push(a.textContent))
            .observe(a, {childList: true, subtree: true, characterData: true});
    }""")
    page.fill("#max-tokens", "24")
    page.fill("#question", QUESTION)
    page.press("#question", "Enter")  # keyboard submit
    page.wait_for_selector("#answer-card[data-state='done']")
    assert page.is_hidden("#error"), page.inner_text("#error")

    text = _answer_text(page)
    partials = [p for p in dict.fromkeys(page.evaluate("window.__partials")) if p.strip()]
    assert text.strip(), "no answer text"
    assert len(partials) >= 2, f"the answer did not stream: {partials}"
    assert all(text.startswith(p) for p in partials), "a partial text is not a prefix of the answer"

    # the same greedy request, not streamed, gives the same text
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24}
    full = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert text == full["choices"][0]["message"]["content"]
    assert f"{full['usage']['completion_tokens']} tokens" in page.inner_text("#answer-meta")

    # the sources list: the answer's citations, in order, each clickable
    cited = full["citations"]
    rows = page.query_selector_all("#sources .source")
    assert [r.get_attribute("data-number") for r in rows] == [str(c["number"]) for c in cited]
    assert [r.query_selector(".source-title").inner_text() for r in rows] == [c["title"] for c in cited]
    _shot(page, tmp_path, "1-answer")

    passages = _passages()
    target = cited[1]
    rows[1].click()
    page.wait_for_selector("#passage", state="visible")
    assert page.inner_text("#passage-title") == target["title"]
    assert page.inner_text("#passage-text") == passages[target["id"]]["text"]
    assert target["id"] in page.inner_text("#passage-meta")
    _shot(page, tmp_path, "2-passage")
    page.keyboard.press("Escape")
    page.wait_for_selector("#passage", state="hidden")

    # any [n] marker the tiny model happened to write is a chip that opens its passage
    chips = page.query_selector_all("#answer button.chip")
    if chips:
        n = chips[0].get_attribute("data-number")
        chips[0].click()
        c = next(c for c in cited if str(c["number"]) == n)
        assert page.inner_text("#passage-title") == c["title"]
        page.keyboard.press("Escape")


def _sse(*chunks) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def _src(n: int, pid: str, score: float, step):
    p = _passages()[pid]
    return {"number": n, "id": pid, "title": p["title"], "snippet": p["text"], "score": score, "step": step,
            "prob": None, "spans": [], "meta": {}}


def test_markers_become_chips_and_retrievals_are_drawn_inline(page, server, tmp_path):
    """A constructed OneGen-style stream (retrievals in the middle of the text, [n] markers), as the
    server would send it, through the page's real fetch/SSE code."""
    head = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "unirag-onegen"}

    def c(delta=None, finish=None, **extra):
        choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {},
                                                                 "finish_reason": finish}]
        return {**head, "choices": choices, **extra}

    s1, s2 = _src(1, "p1", 0.8123, 3), _src(2, "p2", 0.6071, 9)
    s1["snippet"] = "The Mona Lisa is a portrait…"  # as the server cuts a long passage
    pieces = ["The Mona Lisa was painted", " by Leonardo [1].", " The Eiffel Tower", " stands in Paris [2]."]
    stream = _sse(
        c({"role": "assistant", "content": ""}),
        c({"content": pieces[0]}),
        c({}, unirag={"type": "retrieval", "step": 3, "query": "", "sources": [s1]}),
        c({"content": pieces[1]}),
        c({"content": pieces[2]}),
        c({}, unirag={"type": "retrieval", "step": 9, "query": "", "sources": [s2]}),
        c({"content": pieces[3]}),
        c({}, "stop", citations=[s1, s2]),
        c(usage={"prompt_tokens": 40, "completion_tokens": 19, "total_tokens": 59}),
    )
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"content-type": "text/event-stream"}, body=stream))
    _open(page, server)
    page.fill("#question", "Who painted the Mona Lisa and where is the Eiffel Tower?")
    page.press("#question", "Control+Enter")
    page.wait_for_selector("#answer-card[data-state='done']")

    assert _answer_text(page) == "".join(pieces)  # chips and marks keep the text intact
    chips = page.query_selector_all("#answer button.chip")
    assert [ch.inner_text() for ch in chips] == ["1", "2"]
    marks = page.query_selector_all("#answer .trace-mark")
    assert [m.get_attribute("data-step") for m in marks] == ["3", "9"]
    assert "0.812" in marks[0].get_attribute("title") and "Mona Lisa" in marks[0].get_attribute("title")
    # each mark sits where its retrieval happened in the streamed text
    before = page.evaluate("""() => [...document.querySelectorAll('#answer .trace-mark')].map(m => {
        const r = document.createRange();
        r.setStart(document.getElementById('answer'), 0); r.setEndBefore(m);
        return r.toString();
    })""")
    assert before == [pieces[0], "".join(pieces[:3])]
    tags = page.eval_on_selector_all("#sources .tag.step", "ts => ts.map(t => t.textContent)")
    assert tags == ["step 3", "step 9"]
    assert "19 tokens" in page.inner_text("#answer-meta")
    _shot(page, tmp_path, "4-onegen-trace")

    chips[1].click()
    page.wait_for_selector("#passage", state="visible")
    assert page.inner_text("#passage-title") == "Eiffel Tower"
    assert page.inner_text("#passage-text") == _passages()["p2"]["text"]
    assert "generation step 9" in page.inner_text("#passage-meta")
    assert page.is_hidden("#passage-note")
    marks[0].click()
    assert page.inner_text("#passage-title") == "Mona Lisa"
    assert page.inner_text("#passage-text") == s1["snippet"] and page.is_visible("#passage-note")

    # a phone-sized window: the panel becomes a sheet over the page, Escape closes it
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.is_visible("#passage") and page.is_visible("#scrim")
    _shot(page, tmp_path, "5-narrow-passage")
    page.keyboard.press("Escape")
    page.wait_for_selector("#passage", state="hidden")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
    _shot(page, tmp_path, "6-narrow")


def test_search_tab_lists_the_hits(page, server, tmp_path):
    import httpx

    _open(page, server)
    page.click("#tab-search")
    page.wait_for_selector("#panel-search", state="visible")
    page.fill("#search-k", "4")
    page.fill("#search-query", "largest planet")
    page.press("#search-query", "Enter")
    page.wait_for_selector("#hits .hit >> nth=3")
    want = httpx.post(server.url + "/search", json={"query": "largest planet", "k": 4}).json()["hits"]
    hits = page.query_selector_all("#hits .hit")
    assert len(hits) == 4
    assert [h.query_selector(".hit-title").inner_text() for h in hits] == [w["title"] for w in want]
    assert [h.query_selector(".rank").inner_text() for h in hits] == ["#1", "#2", "#3", "#4"]
    assert [h.query_selector(".score").inner_text() for h in hits] == [f"{w['score']:.3f}" for w in want]
    assert [h.query_selector(".hit-text").inner_text() for h in hits] == [w["text"] for w in want]
    assert "4 results" in page.inner_text("#search-summary")
    _shot(page, tmp_path, "3-search")
    hits[2].query_selector(".hit-title button").click()
    page.wait_for_selector("#passage", state="visible")
    assert page.inner_text("#passage-title") == want[2]["title"]
    assert page.inner_text("#passage-text") == want[2]["text"]
    page.emulate_media(color_scheme="dark")  # the page follows the system's dark mode
    _shot(page, tmp_path, "8-search-dark")


def test_server_errors_are_shown_and_stop_aborts(page, server, tmp_path):
    _open(page, server)
    page.fill("#max-tokens", "5000")  # over the server's limit
    page.fill("#question", QUESTION)
    page.click("#ask-btn")
    page.wait_for_selector("#error", state="visible")
    assert "max_tokens = 5000 is over this server's limit" in page.inner_text("#error-text")
    assert page.is_hidden("#answer-card")  # nothing was answered
    _shot(page, tmp_path, "9-error")
    page.click("#error-close")
    assert page.is_hidden("#error")

    # a long answer, stopped as soon as text appears
    page.fill("#max-tokens", "1000")
    page.click("#ask-btn")
    page.wait_for_function("document.getElementById('answer').textContent.trim().length > 0 "
                           "")
    page.click("#stop")
    page.wait_for_selector("#answer-card[data-state='done']")
    assert "stopped" in page.inner_text("#answer-meta")
    assert page.is_hidden("#error") and page.is_hidden("#stop") and page.is_enabled("#ask-btn")


def test_api_key_is_asked_for_and_kept(browser, rag):
    from unirag.serve import create_app
    from unirag.serve.config import ServeConfig

    with _Server(create_app({"pipeline": rag}, ServeConfig(api_key="s3cret"))) as srv:
        ctx = browser.new_context()
        page = ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(srv.url + "/")  # the page itself is open; the API needs the key
            page.wait_for_selector("#error", state="visible")
            assert "API key" in page.inner_text("#error-text")
            assert page.is_visible("#settings")
            page.fill("#api-key", "s3cret")
            page.press("#api-key", "Enter")
            page.wait_for_selector(f"#engine option[value='{MODEL}']", state="attached")
            assert page.evaluate("localStorage.getItem('unirag.apiKey')") == "s3cret"
            page.reload()
            page.wait_for_selector(f"#engine option[value='{MODEL}']", state="attached")
            page.fill("#max-tokens", "4")
            page.fill("#question", QUESTION)
            page.press("#question", "Enter")
            page.wait_for_selector("#answer-card[data-state='done']")
            assert page.is_hidden("#error") and _answer_text(page).strip()
        finally:
            ctx.close()


@pytest.fixture(scope="module")
def onegen_server(tmp_path_factory, tiny_llama_dir, rag):
    """Both engines: the pipeline and a real OneGen engine (a tiny model that retrieves first)."""
    import unirag
    from tests.onegen_engine.conftest import _eager_dir, passages
    from unirag.onegen.docindex import build_onegen_index, model_name
    from unirag.onegen.model import OneGenModel
    from unirag.serve import create_app
    from unirag.serve.config import ServeConfig

    model_dir = _eager_dir(tmp_path_factory, tiny_llama_dir, "query")
    index = build_onegen_index(passages(), tmp_path_factory.mktemp("web-og") / "index",
                               OneGenModel.from_pretrained(model_dir), name=model_name(model_dir), progress=False)
    onegen = unirag.RAG.load(index, engine="onegen", model=model_dir, progress=False)
    with _Server(create_app({"pipeline": rag, "onegen": onegen}, ServeConfig())) as srv:
        yield srv


def test_onegen_retrievals_are_marked_where_they_happened(page, onegen_server, tmp_path):
    import httpx

    page.goto(onegen_server.url + "/")
    page.wait_for_selector("#ready[data-state='ready']")
    page.wait_for_selector("#engine option[value='unirag-onegen']", state="attached")
    assert page.eval_on_selector_all("#engine option", "os => os.map(o => o.value)") == [MODEL, "unirag-onegen"]
    page.select_option("#engine", "unirag-onegen")
    page.fill("#max-tokens", "12")
    page.fill("#question", "Where is the Eiffel Tower?")
    page.press("#question", "Enter")
    page.wait_for_selector("#answer-card[data-state='done']")
    assert page.is_hidden("#error"), page.inner_text("#error")

    body = {"model": "unirag-onegen", "messages": [{"role": "user", "content": "Where is the Eiffel Tower?"}],
            "max_tokens": 12}
    full = httpx.post(onegen_server.url + "/v1/chat/completions", json=body, timeout=60).json()
    trace = full["unirag"]["trace"]
    assert trace and all(t["step"] is not None for t in trace)
    assert _answer_text(page) == full["choices"][0]["message"]["content"]
    marks = page.query_selector_all("#answer .trace-mark")
    assert [m.get_attribute("data-step") for m in marks] == [str(t["step"]) for t in trace]
    for m, t in zip(marks, trace):
        assert f"{t['scores'][0]:.3f}" in m.get_attribute("title")
    assert page.eval_on_selector_all("#sources .tag.step", "ts => ts.map(t => t.textContent)") == \
        [f"step {c['step']}" for c in full["citations"]]
    assert localStorage_engine(page) == "unirag-onegen"
    _shot(page, tmp_path, "7-onegen-real")
    marks[0].click()
    page.wait_for_selector("#passage", state="visible")
    assert page.inner_text("#passage-title") == full["citations"][0]["title"]


def localStorage_engine(page) -> str:
    return page.evaluate("localStorage.getItem('unirag.engine')")


def test_the_ready_indicator_follows_loading(page, rag, index_dir):
    from unirag.serve import create_app
    from unirag.serve.config import ServeConfig

    release = threading.Event()

    def loader():
        release.wait(60)
        return {"pipeline": rag}

    with _Server(create_app(loader, ServeConfig(engines=["pipeline"])), wait_ready=False) as srv:
        page.goto(srv.url + "/")
        page.wait_for_selector("#ready[data-state='loading']")
        assert page.inner_text("#ready-text") == "Loading models…"
        release.set()
        page.wait_for_selector("#ready[data-state='ready']", timeout=15_000)
        page.wait_for_function("document.getElementById('index-size').textContent === '6 passages'")
        assert page.inner_text("#index-name") == Path(index_dir).name
    release.set()
