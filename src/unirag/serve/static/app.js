/* unirag web page: vanilla JS, no dependencies. Talks to the same server that serves it:
 * GET /ready, /info, /v1/models; POST /v1/chat/completions (SSE stream) and /search. */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "unirag.apiKey";
  const ENGINE_STORE = "unirag.engine";
  const TOKENS_STORE = "unirag.maxTokens";
  const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

  const el = {
    ready: $("ready"), readyText: $("ready-text"), indexName: $("index-name"), indexSize: $("index-size"),
    indexInfo: $("index-info"),
    settingsBtn: $("settings-btn"), settings: $("settings"), settingsForm: $("settings-form"),
    apiKey: $("api-key"), apiKeyClear: $("api-key-clear"), apiKeyState: $("api-key-state"),
    layout: document.querySelector(".layout"),
    tabAsk: $("tab-ask"), tabSearch: $("tab-search"), panelAsk: $("panel-ask"), panelSearch: $("panel-search"),
    error: $("error"), errorText: $("error-text"), errorClose: $("error-close"),
    askForm: $("ask-form"), question: $("question"), engine: $("engine"), maxTokens: $("max-tokens"),
    askBtn: $("ask-btn"), stop: $("stop"),
    answerCard: $("answer-card"), answerMeta: $("answer-meta"), questionEcho: $("question-echo"),
    answer: $("answer"), sourcesBlock: $("sources-block"), sources: $("sources"), askEmpty: $("ask-empty"),
    searchForm: $("search-form"), searchQuery: $("search-query"), searchK: $("search-k"),
    searchBtn: $("search-btn"), searchSummary: $("search-summary"), hits: $("hits"),
    passage: $("passage"), passageNumber: $("passage-number"), passageTitle: $("passage-title"),
    passageMeta: $("passage-meta"), passageText: $("passage-text"), passageClose: $("passage-close"),
    passageNote: $("passage-note"),
    scrim: $("scrim"),
  };

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  const fmtScore = (s) => (typeof s === "number" && isFinite(s) ? s.toFixed(3) : "—");
  const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n));
  const apiKey = () => localStorage.getItem(KEY_STORE) || "";

  function headers(json) {
    const hd = {};
    if (json) hd["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) hd["Authorization"] = "Bearer " + key;
    return hd;
  }

  class HttpError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  /** The server's message from an error response: {"error": {"message"}} or FastAPI's {"detail"}. */
  async function errorOf(resp) {
    let msg = resp.statusText || "request failed";
    try {
      const body = await resp.json();
      if (body && body.error) msg = typeof body.error === "string" ? body.error : (body.error.message || msg);
      else if (body && typeof body.detail === "string") msg = body.detail;
      else if (body && Array.isArray(body.detail)) {
        msg = body.detail.map((d) => ((d.loc || []).filter((x) => x !== "body").join(".") || "request")
          + ": " + d.msg).join("; ");
      }
    } catch (_) { /* not JSON */ }
    return new HttpError(`${msg} (HTTP ${resp.status})`, resp.status);
  }

  async function getJSON(path) {
    const resp = await fetch(path, { headers: headers(false) });
    if (!resp.ok) throw await errorOf(resp);
    return resp.json();
  }

  async function postJSON(path, body, signal) {
    const resp = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body), signal });
    if (!resp.ok) throw await errorOf(resp);
    return resp;
  }

  function showError(err) {
    const msg = err && err.message ? err.message : String(err);
    el.errorText.textContent = msg;
    el.error.hidden = false;
    if (err && err.status === 401) openSettings(true);
  }
  function hideError() { el.error.hidden = true; el.errorText.textContent = ""; }
  el.errorClose.addEventListener("click", hideError);

  // ------------------------------------------------------------------ settings (API key)
  function openSettings(focus) {
    el.settings.hidden = false;
    el.settingsBtn.setAttribute("aria-expanded", "true");
    if (focus) el.apiKey.focus();
  }
  function syncKeyState() {
    el.apiKey.value = apiKey();
    el.apiKeyState.textContent = apiKey() ? "Key saved in this browser." : "No key set. Stored in this browser only.";
  }
  el.settingsBtn.addEventListener("click", () => {
    if (el.settings.hidden) openSettings(true);
    else { el.settings.hidden = true; el.settingsBtn.setAttribute("aria-expanded", "false"); }
  });
  el.settingsForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = el.apiKey.value.trim();
    if (v) localStorage.setItem(KEY_STORE, v); else localStorage.removeItem(KEY_STORE);
    syncKeyState();
    hideError();
    loadServerInfo();
  });
  el.apiKeyClear.addEventListener("click", () => { localStorage.removeItem(KEY_STORE); syncKeyState(); });
  syncKeyState();

  // ------------------------------------------------------------------ tabs
  const tabs = [el.tabAsk, el.tabSearch];
  function selectTab(tab, focus) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    const hash = tab === el.tabSearch ? "#search" : "#ask";
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }
  for (const t of tabs) {
    t.addEventListener("click", () => selectTab(t, false));
    t.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(t);
      let next = null;
      if (ev.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
      else if (ev.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
      else if (ev.key === "Home") next = tabs[0];
      else if (ev.key === "End") next = tabs[tabs.length - 1];
      if (next) { ev.preventDefault(); selectTab(next, true); }
    });
  }
  selectTab(location.hash === "#search" ? el.tabSearch : el.tabAsk, false);

  // ------------------------------------------------------------------ server status, index info, engines
  let readyState = null;
  let pollTimer = null;

  function setReady(state, text) {
    el.ready.dataset.state = state;
    el.readyText.textContent = text;
    el.ready.title = text;
  }

  async function pollReady() {
    clearTimeout(pollTimer);
    let state;
    let text;
    try {
      const resp = await fetch("ready", { headers: headers(false), cache: "no-store" });
      if (resp.ok) { state = "ready"; text = "Ready"; }
      else if (resp.status === 503) { state = "loading"; text = "Loading models…"; }
      else { state = "down"; text = `Not ready (HTTP ${resp.status})`; }
    } catch (_) {
      state = "down"; text = "Server unreachable";
    }
    const was = readyState;
    readyState = state;
    setReady(state, text);
    if (state === "ready" && was !== "ready") loadServerInfo();
    pollTimer = setTimeout(pollReady, state === "ready" ? 10000 : 2000);
  }

  function basename(p) {
    const s = String(p).replace(/[\\/]+$/, "");
    return s.slice(Math.max(s.lastIndexOf("/"), s.lastIndexOf("\\")) + 1) || s;
  }

  function showInfo(info) {
    const idx = info.index && typeof info.index === "object" ? info.index : null;
    const path = idx ? (idx.path || idx.name) : (info.index || info.index_path);
    const name = (idx && idx.name) || info.index_name || (path ? basename(path) : "");
    let count = info.passages;
    if (count === undefined && idx) count = idx.passages;
    if (count === undefined) count = info.passage_count;
    el.indexName.textContent = name || "no index";
    el.indexInfo.title = path ? `Index: ${path}` : "Index";
    el.indexSize.textContent = typeof count === "number"
      ? `${fmtInt(count)} passage${count === 1 ? "" : "s"}` : "";
  }

  function showModels(list) {
    const ids = (list.data || []).map((m) => m.id).filter(Boolean);
    const prev = el.engine.value || localStorage.getItem(ENGINE_STORE);
    el.engine.replaceChildren(...ids.map((id) => h("option", { value: id, text: id })));
    if (!ids.length) el.engine.append(h("option", { value: "", text: "No engines" }));
    if (prev && ids.includes(prev)) el.engine.value = prev;
  }

  async function loadServerInfo() {
    const [info, models] = await Promise.allSettled([getJSON("info"), getJSON("v1/models")]);
    if (info.status === "fulfilled") showInfo(info.value);
    if (models.status === "fulfilled") showModels(models.value);
    const failed = [info, models].find((r) => r.status === "rejected");
    if (failed) showError(failed.reason);
  }

  el.engine.addEventListener("change", () => localStorage.setItem(ENGINE_STORE, el.engine.value));
  el.maxTokens.value = localStorage.getItem(TOKENS_STORE) || el.maxTokens.value;
  el.maxTokens.addEventListener("change", () => localStorage.setItem(TOKENS_STORE, el.maxTokens.value));

  // ------------------------------------------------------------------ passage panel
  let panelReturn = null;
  let activeNumber = null;

  function markActive(number) {
    activeNumber = number;
    for (const n of document.querySelectorAll("[data-number]")) {
      n.classList.toggle("active", number !== null && n.dataset.number === String(number)
        && !n.closest(".hits"));
    }
  }

  /** Open the side panel on a passage: {number, id, title, text, score, step, ...}; rows: extra meta. */
  function openPassage(p, rows, opener) {
    el.passageNumber.textContent = p.number !== undefined && p.number !== null ? String(p.number) : "";
    el.passageNumber.hidden = !el.passageNumber.textContent;
    el.passageTitle.textContent = p.title || p.id || "Passage";
    const meta = [["ID", p.id], ["Score", fmtScore(p.score)], ...(rows || [])];
    el.passageMeta.replaceChildren(...meta.filter(([, v]) => v !== undefined && v !== null && v !== "")
      .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v) })]));
    el.passageText.replaceChildren(...highlight(p.text || p.snippet || "", p.highlights || []));
    el.passageNote.hidden = !(!p.text && p.snippet && p.snippet.endsWith("…"));
    el.passage.hidden = false;
    el.layout.classList.add("with-panel");
    el.scrim.hidden = false;
    panelReturn = opener || document.activeElement;
    markActive(p.fromAnswer ? p.number : null);
    el.passageTitle.focus({ preventScroll: true });
  }

  function closePassage() {
    if (el.passage.hidden) return;
    el.passage.hidden = true;
    el.scrim.hidden = true;
    el.layout.classList.remove("with-panel");
    markActive(null);
    if (panelReturn && document.contains(panelReturn)) panelReturn.focus({ preventScroll: true });
    panelReturn = null;
  }

  /** Text nodes with the given substrings wrapped in <mark>. */
  function highlight(text, phrases) {
    const ranges = [];
    for (const ph of phrases) {
      if (!ph) continue;
      const i = text.indexOf(ph);
      if (i >= 0) ranges.push([i, i + ph.length]);
    }
    ranges.sort((a, b) => a[0] - b[0]);
    const out = [];
    let at = 0;
    for (const [s, e] of ranges) {
      if (s < at) continue;
      out.push(document.createTextNode(text.slice(at, s)), h("mark", { text: text.slice(s, e) }));
      at = e;
    }
    out.push(document.createTextNode(text.slice(at)));
    return out;
  }

  el.passageClose.addEventListener("click", closePassage);
  el.scrim.addEventListener("click", closePassage);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePassage(); });

  // ------------------------------------------------------------------ Ask: streaming answer
  /** State of the answer being shown. */
  let run = null;

  function newRun(question, engine) {
    return {
      question, engine,
      sources: new Map(), // number -> source (from retrieval chunks, then citations)
      cited: new Set(),
      segments: [], // {text, node} for text; marks are DOM nodes between segments
      raw: "",
      finish: null, usage: null, started: performance.now(), firstToken: null, ended: null,
      controller: new AbortController(), stopped: false, meta: null,
    };
  }

  function openSource(number, opener) {
    const s = run && run.sources.get(number);
    if (!s) return;
    const rows = [["Marker", `[${s.number}]`],
      ["Retrieved", s.step === null || s.step === undefined ? "before generation" : `at generation step ${s.step}`],
      ["Cited", run.cited.has(s.number) ? "yes" : "no"]];
    if (typeof s.prob === "number") rows.push(["Weight", fmtScore(s.prob)]);
    const spans = (s.spans || []).map((sp) => sp.text).filter(Boolean);
    if (spans.length) rows.push(["Supports", spans.map((t) => `“${t.trim()}”`).join("  ")]);
    openPassage({ ...s, fromAnswer: true }, rows, opener);
  }

  function chip(number, label) {
    const known = run && run.sources.has(number);
    const s = known ? run.sources.get(number) : null;
    if (!known) {
      return h("span", { class: "chip unknown", title: `No source [${number}] was returned`, text: label });
    }
    return h("button", {
      type: "button", class: "chip" + (activeNumber === number ? " active" : ""),
      dataset: { number: String(number) },
      title: `[${number}] ${s.title || s.id} (score ${fmtScore(s.score)})`,
      "aria-label": `Source ${number}: ${s.title || s.id}`,
      onclick: (ev) => openSource(number, ev.currentTarget),
    }, label);
  }

  /** Nodes for answer text with [n] / [n, m] markers as chips. The brackets stay in the DOM
   * (hidden) so that the element's textContent is exactly the answer's text. */
  function renderText(text) {
    const out = [];
    let at = 0;
    MARKER.lastIndex = 0;
    let m;
    while ((m = MARKER.exec(text)) !== null) {
      if (m.index > at) out.push(document.createTextNode(text.slice(at, m.index)));
      out.push(h("span", { class: "sr-only", text: "[" }));
      const parts = m[1].split(/(\s*,\s*)/);
      for (const part of parts) {
        if (/^\d+$/.test(part)) out.push(chip(parseInt(part, 10), part));
        else out.push(h("span", { class: "sr-only", text: part }));
      }
      out.push(h("span", { class: "sr-only", text: "]" }));
      at = m.index + m[0].length;
    }
    if (at < text.length) out.push(document.createTextNode(text.slice(at)));
    return out;
  }

  function currentSegment() {
    let seg = run.segments[run.segments.length - 1];
    if (!seg || seg.closed) {
      seg = { text: "", node: h("span", { class: "seg" }), closed: false };
      run.segments.push(seg);
      el.answer.append(seg.node);
    }
    return seg;
  }

  function appendText(delta) {
    if (!run.raw) {
      delta = delta.replace(/^\s+/, ""); // the answer's leading whitespace is not shown
      if (!delta) return;
      delete el.answer.dataset.placeholder;
      run.firstToken = performance.now();
    }
    run.raw += delta;
    const seg = currentSegment();
    seg.text += delta;
    seg.node.replaceChildren(...renderText(seg.text));
  }

  function rerenderAll() {
    for (const seg of run.segments) seg.node.replaceChildren(...renderText(seg.text));
  }

  const SEARCH_ICON = '<svg viewBox="0 0 16 16" aria-hidden="true"><path fill="currentColor" d="M6.5 1a5.5 5.5 0 0 1 4.38 8.83l3.65 3.64-1.06 1.06-3.64-3.65A5.5 5.5 0 1 1 6.5 1Zm0 1.5a4 4 0 1 0 0 8 4 4 0 0 0 0-8Z"/></svg>';

  function onRetrieval(u) {
    const fresh = (u.sources || []).filter((s) => typeof s.number === "number");
    for (const s of fresh) {
      if (s.step === undefined) s.step = u.step;
      if (!run.sources.has(s.number)) run.sources.set(s.number, s);
    }
    renderSources();
    if (u.step === null || u.step === undefined) return; // retrieved before generation: no inline mark
    // a retrieval during generation (OneGen): a marker at this point of the streamed text
    const top = fresh[0];
    const nums = fresh.map((s) => s.number);
    const label = top ? `${nums.join(",")} · ${fmtScore(top.score)}` : "none";
    const desc = fresh.length
      ? fresh.map((s) => `[${s.number}] ${s.title || s.id} (score ${fmtScore(s.score)})`).join("; ")
      : "no passage";
    const mark = h("button", {
      type: "button", class: "trace-mark", dataset: { step: String(u.step), label },
      title: `Retrieved at generation step ${u.step}: ${desc}`,
      "aria-label": `Retrieval at generation step ${u.step}: ${desc}`,
      onclick: (ev) => { if (top) openSource(top.number, ev.currentTarget); },
    });
    mark.innerHTML = SEARCH_ICON;
    mark.append(h("span", { class: "trace-label", "aria-hidden": "true" }));
    mark.lastChild.dataset.text = label;
    delete el.answer.dataset.placeholder;
    el.answer.append(mark);
    const last = run.segments[run.segments.length - 1];
    if (last) last.closed = true;
  }

  function onCitations(cites) {
    for (const c of cites) {
      if (typeof c.number !== "number") continue;
      const s = run.sources.get(c.number);
      if (s) {
        if (c.spans) s.spans = c.spans;
        if (typeof c.score === "number" && typeof s.score !== "number") s.score = c.score;
      } else {
        run.sources.set(c.number, { ...c, text: c.text || c.snippet || "" });
      }
    }
    renderSources();
  }

  /** The source numbers the answer's [n] markers refer to. */
  function citedNumbers(text) {
    const out = new Set();
    for (const m of text.matchAll(MARKER)) for (const n of m[1].split(",")) out.add(parseInt(n, 10));
    return out;
  }

  function renderSources() {
    run.cited = citedNumbers(run.raw);
    const list = [...run.sources.values()].sort((a, b) => a.number - b.number);
    el.sourcesBlock.hidden = list.length === 0;
    el.sources.replaceChildren(...list.map((s) => {
      const side = h("span", { class: "source-side" });
      if (run.cited.has(s.number)) side.append(h("span", { class: "tag cited", text: "cited" }));
      if (s.step !== null && s.step !== undefined) side.append(h("span", { class: "tag step", text: `step ${s.step}` }));
      side.append(h("span", { class: "score", title: "Retrieval score", text: fmtScore(s.score) }));
      const btn = h("button", {
        type: "button", class: "source" + (activeNumber === s.number ? " active" : ""),
        dataset: { number: String(s.number) },
        "aria-label": `Open source ${s.number}: ${s.title || s.id}`,
        onclick: (ev) => openSource(s.number, ev.currentTarget),
      },
      h("span", { class: "chip", text: String(s.number) }),
      h("span", { class: "source-title", text: s.title || s.id }),
      side,
      h("span", { class: "source-snippet", text: s.text || s.snippet || "" }));
      return h("li", {}, btn);
    }));
  }

  function renderMeta() {
    if (!run) return;
    const now = run.ended || performance.now();
    const parts = [];
    if (run.engine) parts.push(h("span", { class: "pill", text: run.engine }));
    const elapsed = (now - run.started) / 1000;
    const secs = elapsed.toFixed(elapsed < 10 ? 2 : 1);
    let txt = `${secs} s`;
    if (run.firstToken) txt += ` · first token ${((run.firstToken - run.started) / 1000).toFixed(2)} s`;
    if (run.usage) txt += ` · ${fmtInt(run.usage.completion_tokens)} tokens`;
    if (run.finish) txt += ` · ${run.finish}`;
    if (run.stopped) parts.push(h("span", { class: "pill stopped", text: "stopped" }));
    parts.push(document.createTextNode(txt));
    el.answerMeta.replaceChildren(...parts);
  }

  /** Yields each SSE event's data (a string) from a fetch response body. */
  async function* sseData(resp) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    let data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buf += done ? dec.decode() : dec.decode(value, { stream: true });
        const lines = buf.split(/\r\n|\n|\r/);
        buf = done ? "" : lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (data.length) { yield data.join("\n"); data = []; }
          } else if (line.startsWith("data:")) {
            data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
          } // comments (":") and other fields are ignored
        }
        if (done) break;
      }
      if (data.length) yield data.join("\n");
    } finally {
      reader.releaseLock();
    }
  }

  function handleChunk(c) {
    if (c.error) throw new HttpError(typeof c.error === "string" ? c.error : (c.error.message || "stream error"));
    const u = c.unirag;
    if (u && u.type === "retrieval") onRetrieval(u);
    const ch = c.choices && c.choices[0];
    if (ch) {
      const d = ch.delta || ch.message || {};
      if (typeof d.content === "string" && d.content) appendText(d.content);
      if (ch.finish_reason) run.finish = ch.finish_reason;
    }
    const cites = c.citations || (u && u.citations) || (ch && ch.citations);
    if (Array.isArray(cites)) onCitations(cites);
    if (c.usage) run.usage = c.usage;
  }

  function setBusy(busy) {
    el.askBtn.disabled = busy;
    el.stop.hidden = !busy;
    el.answer.setAttribute("aria-busy", busy ? "true" : "false");
    el.answerCard.dataset.state = busy ? "streaming" : "done";
  }

  async function ask(question) {
    if (run && !run.ended) run.controller.abort();
    hideError();
    closePassage();
    const engine = el.engine.value;
    const maxTokens = parseInt(el.maxTokens.value, 10);
    run = newRun(question, engine);
    const my = run;
    el.askEmpty.hidden = true;
    el.answerCard.hidden = false;
    el.questionEcho.textContent = question;
    el.answer.replaceChildren();
    el.answer.dataset.placeholder = "Retrieving and generating…";
    el.sources.replaceChildren();
    el.sourcesBlock.hidden = true;
    setBusy(true);
    const ticker = setInterval(renderMeta, 100);
    renderMeta();
    const body = { model: engine || undefined, messages: [{ role: "user", content: question }], stream: true,
      stream_options: { include_usage: true } };
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    try {
      const resp = await postJSON("v1/chat/completions", body, my.controller.signal);
      for await (const data of sseData(resp)) {
        if (data.trim() === "[DONE]") break;
        let chunk;
        try { chunk = JSON.parse(data); } catch (_) { continue; }
        handleChunk(chunk);
      }
    } catch (err) {
      if (err && err.name === "AbortError") my.stopped = my.stopped || run !== my;
      else if (run === my) showError(err.name === "TypeError" ? new Error(`Network error: ${err.message}`) : err);
    } finally {
      clearInterval(ticker);
      if (run === my) {
        my.ended = performance.now();
        delete el.answer.dataset.placeholder;
        if (!my.raw && !my.stopped && el.error.hidden) el.answer.dataset.placeholder = "(empty answer)";
        // refused before anything came: the error banner says it all
        if (!el.error.hidden && !my.raw && my.sources.size === 0) el.answerCard.hidden = true;
        rerenderAll();
        renderSources();
        setBusy(false);
        renderMeta();
      }
    }
  }

  el.stop.addEventListener("click", () => {
    if (run && !run.ended) { run.stopped = true; run.controller.abort(); }
  });

  el.askForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = el.question.value.trim();
    if (!q) { el.question.focus(); return; }
    if (!el.engine.value) {
      showError(new Error("No engine to ask yet: the server is still starting (see the indicator at the top right)."));
      return;
    }
    ask(q);
  });
  el.question.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (!el.askBtn.disabled) el.askForm.requestSubmit();
    }
  });

  // ------------------------------------------------------------------ Search
  let searchController = null;

  async function search(query, k) {
    if (searchController) searchController.abort();
    searchController = new AbortController();
    hideError();
    el.searchBtn.disabled = true;
    el.searchSummary.textContent = "Searching…";
    const t0 = performance.now();
    try {
      const resp = await postJSON("search", { query, k }, searchController.signal);
      const out = await resp.json();
      renderHits(out.hits || [], query, (performance.now() - t0) / 1000);
    } catch (err) {
      if (err.name !== "AbortError") { el.searchSummary.textContent = ""; showError(err); }
    } finally {
      el.searchBtn.disabled = false;
    }
  }

  function renderHits(hits, query, secs) {
    el.searchSummary.textContent = `${hits.length} result${hits.length === 1 ? "" : "s"} for “${query}” in ${secs.toFixed(2)} s`;
    const scores = hits.map((x) => x.score).filter((s) => typeof s === "number");
    const hi = Math.max(...scores);
    const lo = Math.min(...scores);
    el.hits.replaceChildren(...hits.map((hit, i) => {
      const rank = hit.number || i + 1;
      const frac = hi > lo ? 0.12 + 0.88 * (hit.score - lo) / (hi - lo) : 1;
      const open = (ev) => openPassage({ ...hit, number: rank }, [["Rank", rank]], ev.currentTarget);
      const text = h("div", { class: "hit-text clamped", id: `hit-text-${i}`, text: hit.text || "" });
      const li = h("li", { class: "card hit", dataset: { number: String(rank) } },
        h("div", { class: "hit-head" },
          h("span", { class: "rank", text: `#${rank}` }),
          h("h3", { class: "hit-title" }, h("button", { type: "button", onclick: open, text: hit.title || hit.id })),
          h("span", { class: "scorebar", title: "Retrieval score" },
            h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${(frac * 100).toFixed(0)}%` })),
            h("span", { class: "score", text: fmtScore(hit.score) }))),
        h("div", { class: "hit-id", text: hit.id }),
        text);
      const toggle = h("button", {
        type: "button", class: "linkish", "aria-expanded": "false", "aria-controls": text.id, text: "Show full text",
        onclick: () => {
          const expanded = text.classList.toggle("clamped") === false;
          toggle.setAttribute("aria-expanded", expanded ? "true" : "false");
          toggle.textContent = expanded ? "Show less" : "Show full text";
        },
      });
      li.append(toggle);
      return li;
    }));
    // the toggle only where the text is actually cut
    requestAnimationFrame(() => {
      for (const li of el.hits.children) {
        const t = li.querySelector(".hit-text");
        const b = li.querySelector(".linkish");
        if (t && b) b.hidden = t.scrollHeight <= t.clientHeight + 1;
      }
    });
  }

  el.searchForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = el.searchQuery.value.trim();
    const k = parseInt(el.searchK.value, 10) || 10;
    if (q) search(q, k);
  });

  // ------------------------------------------------------------------ start
  pollReady();
  window.addEventListener("focus", () => { if (readyState !== "ready") pollReady(); });
})();
