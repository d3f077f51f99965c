"""Load benchmark of ``unirag serve`` on loopback: batching, time to first token, search over HTTP.

Starts the real server as a subprocess on 127.0.0.1 (a free port; nothing else is contacted),
waits for ``/ready``, then, per generator:

1. **warm time to first token**: streamed chat completions one at a time (3-passage prompt),
   TTFT and total; the prefill / decoding split comes from the answer's own timings;
2. **batching**: the same N chat requests (greedy, fixed ``max_tokens``) one after another, then
   all at once; the ratio concurrent / sequential (target <= 0.4 for N = 8); again with longer
   answers (``--long-tokens``), and with continuous batching off (``--no-continuous``); in process,
   the floor batching can reach: prompt prefill is compute-bound (N prompts cost N prefills,
   batched or not), decoding steps cost about the same for 1 or N rows;
3. **search over HTTP**: ``/search`` at concurrency 8 for a fixed time vs the same searches in
   process (``RAG.search`` from 8 threads over the same index, one query per call); target >= 80 %.
   The server answers concurrent searches together (``unirag.serve.search_batch``), so the ceiling
   is also shown: one thread searching batches of 8 queries in process;
4. **mixed load**: C concurrent clients for D seconds, each alternating ``/search`` and a streamed
   chat completion; errors (target 0), requests/s, p50 / p99 latency and TTFT.

Bounded: every phase stops by itself (request counts and a deadline). Prints a table, writes JSON.

    python bench/bench_server.py                                  # SmolLM2, full run (~6-8 min)
    python bench/bench_server.py --quick                          # a smoke run
    python bench/bench_server.py --generators smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from unirag.models.registry import default_dtype

QUESTIONS = [
    "Who painted the Mona Lisa?", "Who discovered penicillin?", "Where is the Eiffel Tower?",
    "What is the largest planet in the Solar System?", "Who wrote Hamlet?", "What is photosynthesis?",
    "Which river flows through Cairo?", "Who composed the Moonlight Sonata?", "What is the capital of Japan?",
    "Who developed the theory of relativity?", "What is the tallest mountain on Earth?", "Who was Cleopatra?",
    "What language is spoken in Brazil?", "Who invented the telephone?", "What is the Great Barrier Reef?",
    "Who founded Microsoft?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def start_server(generator: str, port: int, threads: int, max_batch: int, continuous: bool = True,
                 dtype: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "unirag.cli.app", "serve", "--engine", "pipeline", "--generator", generator,
           "--port", str(port), "--max-batch", str(max_batch), "--max-queue", "64",
           "--continuous" if continuous else "--no-continuous", *(["--dtype", dtype] if dtype else [])]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > 900:
            proc.kill()
            raise RuntimeError("the server did not become ready in 15 minutes")
        time.sleep(0.5)


async def chat(client: httpx.AsyncClient, q: str, max_tokens: int, stream: bool) -> dict:
    body = {"model": "unirag-pipeline", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream, "k": 3}
    t0 = time.perf_counter()
    if not stream:
        r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        data = r.json()
        return {"total": time.perf_counter() - t0, "tokens": data["usage"]["completion_tokens"],
                "timings": data.get("unirag", {}).get("timings", {})}
    ttft, text, final = None, [], {}
    async with client.stream("POST", "/v1/chat/completions", json=body | {"stream_options": {"include_usage": True}}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(ev["error"])
            for ch in ev.get("choices", []):
                piece = ch.get("delta", {}).get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    text.append(piece)
            if ev.get("usage"):
                final = ev["usage"]
    return {"total": time.perf_counter() - t0, "ttft": ttft, "tokens": final.get("completion_tokens", 0)}


async def phase_ttft(url: str, n: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await chat(c, QUESTIONS[0], 4, True)  # warm-up
        runs = [await chat(c, QUESTIONS[i % len(QUESTIONS)], max_tokens, True) for i in range(n)]
        split = [await chat(c, QUESTIONS[i % len(QUESTIONS)], max_tokens, False) for i in range(min(n, 3))]
    ttft = [r["ttft"] for r in runs if r["ttft"] is not None]
    # the answer's own timings: first_token = retrieval + prompt prefill; the rest is decoding
    pre = [s["timings"].get("first_token") for s in split if s["timings"].get("first_token") is not None]
    dec = [s["timings"]["total"] - s["timings"]["first_token"] for s in split
           if s["timings"].get("first_token") is not None]
    toks = [s["tokens"] for s in split]
    return {"n": n, "ttft_p50_s": statistics.median(ttft) if ttft else None,
            "ttft_max_s": max(ttft) if ttft else None, "total_p50_s": statistics.median(r["total"] for r in runs),
            "prefill_s_p50": statistics.median(pre) if pre else None,
            "decode_s_p50": statistics.median(dec) if dec else None,
            "decode_tokens_per_s": (sum(toks) - len(toks)) / sum(dec) if dec and sum(dec) > 0 else None}


async def phase_batching(url: str, n: int, max_tokens: int) -> dict:
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    async with httpx.AsyncClient(base_url=url, timeout=1200) as c:
        t0 = time.perf_counter()
        seq = [await chat(c, q, max_tokens, False) for q in qs]
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        conc = await asyncio.gather(*(chat(c, q, max_tokens, False) for q in qs))
        t_conc = time.perf_counter() - t0
    return {"n": n, "max_tokens": max_tokens, "sequential_s": t_seq, "concurrent_s": t_conc,
            "ratio": t_conc / t_seq, "tokens_sequential": sum(r["tokens"] for r in seq),
            "tokens_concurrent": sum(r["tokens"] for r in conc)}


def engine_floor(generator: str, n: int, max_tokens: int, threads: int, dtype: str | None = None) -> dict:
    """In process, no HTTP: where the time of one answer goes (prompt prefill vs decoding steps),
    and the best concurrent / sequential ratio batching can reach. Prefill is compute-bound, so N
    prompts cost N prefills batched or not; decoding steps cost about the same for 1 or N rows. The
    floor is (batched run of N) / (N single runs), measured on the same prompts."""
    import torch

    import unirag
    from unirag.models.decoding import DoneEvent, EngineModel, split_lm

    torch.set_num_threads(threads)
    rag = unirag.RAG.load(engine="pipeline", generator=generator, k=3, progress=False, dtype=dtype)
    eng = rag.engine
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    ids = [eng.generator.encode_prompt(p) for p, _ in eng.prepare(qs, rag.params)]
    params = rag.params.with_(max_new_tokens=max_tokens)
    dec = eng.generator.decoder()
    decoder, _ = split_lm(dec.model.lm)
    dec.generate([ids[0]], params.with_(max_new_tokens=2))  # warm-up
    prefill = []
    with torch.inference_mode():
        for x in ids:
            t = time.perf_counter()
            decoder(input_ids=torch.tensor([x]), use_cache=True)
            prefill.append(time.perf_counter() - t)
    t = time.perf_counter()
    singles = [dec.generate([x], params)[0] for x in ids]
    t_seq = time.perf_counter() - t
    t = time.perf_counter()
    batch = dec.generate(ids, params)
    t_batch = time.perf_counter() - t
    tokens = [len(o.token_ids) for o in singles]
    decode_seq = t_seq - sum(prefill)
    return {"n": n, "prompt_tokens_mean": sum(map(len, ids)) / n, "completion_tokens": tokens,
            "prefill_s": prefill, "prefill_share_of_sequential": sum(prefill) / t_seq,
            "decode_s_per_token_single": decode_seq / max(1, sum(tokens) - n),
            "sequential_s": t_seq, "batched_s": t_batch, "floor_ratio": t_batch / t_seq,
            "same_tokens": [o.token_ids for o in batch] == [o.token_ids for o in singles],
            "ratio_if_prefill_were_free": (t_batch - sum(prefill)) / max(1e-9, decode_seq)}


async def phase_search_http(url: str, concurrency: int, seconds: float) -> dict:
    done, lat = 0, []
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            j = i
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                r = await c.post("/search", json={"query": QUESTIONS[j % len(QUESTIONS)], "k": 5})
                r.raise_for_status()
                lat.append(time.perf_counter() - t)
                done += 1
                j += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"requests": done, "qps": done / (time.perf_counter() - t0), "p50_ms": 1000 * pct(lat, 50),
            "p99_ms": 1000 * pct(lat, 99)}


def search_in_process(concurrency: int, seconds: float, batched: bool = False) -> dict:
    """``RAG.search`` from ``concurrency`` threads, one query per call; ``batched``: one thread
    searching ``concurrency`` queries per call (what the server's search batching can reach)."""
    import unirag

    rag = unirag.RAG.load(engine="pipeline", generator=None, progress=False)
    rag.search(QUESTIONS[0], 5)
    if batched:
        done, j = 0, 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            rag.search([QUESTIONS[(j + i) % len(QUESTIONS)] for i in range(concurrency)], 5)
            done += concurrency
            j += concurrency
        return {"requests": done, "qps": done / (time.perf_counter() - t0)}
    done = [0] * concurrency
    deadline = time.perf_counter() + seconds

    def worker(i: int) -> None:
        j = i
        while time.perf_counter() < deadline:
            rag.search(QUESTIONS[j % len(QUESTIONS)], 5)
            done[i] += 1
            j += concurrency

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": sum(done), "qps": sum(done) / (time.perf_counter() - t0)}


async def phase_mixed(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    stats = {"search": [], "chat": [], "ttft": [], "errors": 0, "requests": 0}
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            j = i
            while time.perf_counter() < deadline:
                q = QUESTIONS[j % len(QUESTIONS)]
                try:
                    if j % 2 == 0:
                        t = time.perf_counter()
                        (await c.post("/search", json={"query": q, "k": 5})).raise_for_status()
                        stats["search"].append(time.perf_counter() - t)
                    else:
                        r = await chat(c, q, max_tokens, True)
                        stats["chat"].append(r["total"])
                        if r["ttft"] is not None:
                            stats["ttft"].append(r["ttft"])
                except Exception:  # counted, the run goes on
                    stats["errors"] += 1
                stats["requests"] += 1
                j += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": wall, "requests": stats["requests"], "errors": stats["errors"],
            "requests_per_s": stats["requests"] / wall, "search_p50_ms": 1000 * pct(stats["search"], 50),
            "search_p99_ms": 1000 * pct(stats["search"], 99), "chat_p50_s": pct(stats["chat"], 50),
            "chat_p99_s": pct(stats["chat"], 99), "ttft_p50_s": pct(stats["ttft"], 50),
            "ttft_p99_s": pct(stats["ttft"], 99), "chats": len(stats["chat"]), "searches": len(stats["search"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", default="smollm2-135m-instruct")
    ap.add_argument("--dtypes", default="", help="comma-separated generator weights to run each generator with "
                    "(float32, bfloat16; empty: the model's default on this CPU); results keyed GENERATOR@DTYPE")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server process")
    ap.add_argument("--batch", type=int, default=8, help="requests in the batching phase")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--long-tokens", type=int, default=128,
                    help="max_tokens of a second batching phase with longer answers (0: skip)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--search-seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="small counts and short phases (a smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "server.json"))
    a = ap.parse_args()
    if a.quick:
        a.batch, a.max_tokens, a.clients, a.seconds, a.search_seconds, a.long_tokens = 4, 8, 4, 10.0, 3.0, 0
    load = os.getloadavg()[0]
    report: dict = {"config": vars(a), "load_average_at_start": load, "generators": {}}
    print(f"load average at start: {load:.2f} (timings are only meaningful on an idle machine)", flush=True)
    dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()] or [None]
    for gen, dtype in [(g.strip(), d) for g in a.generators.split(",") if g.strip() for d in dtypes]:
        key = f"{gen}@{dtype}" if dtype else gen
        port = free_port()
        t0 = time.perf_counter()
        proc = start_server(gen, port, a.threads, max(a.batch, 8), dtype=dtype)
        ready_s = time.perf_counter() - t0
        url = f"http://127.0.0.1:{port}"
        try:
            res = {"ready_s": ready_s}
            res["ttft"] = asyncio.run(phase_ttft(url, 3 if a.quick else 5, a.max_tokens))
            res["batching"] = asyncio.run(phase_batching(url, a.batch, a.max_tokens))
            if a.long_tokens:  # the same with longer answers: decoding, which batching shares, dominates
                res["batching_long"] = asyncio.run(phase_batching(url, a.batch, a.long_tokens))
            res["search_http"] = asyncio.run(phase_search_http(url, 8, a.search_seconds))
            res["mixed"] = asyncio.run(phase_mixed(url, a.clients, a.seconds, a.max_tokens))
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not a.quick:  # the same batching phase with requests batched only as they arrive together
            port = free_port()
            proc = start_server(gen, port, a.threads, max(a.batch, 8), continuous=False, dtype=dtype)
            try:
                res["batching_waves"] = asyncio.run(phase_batching(f"http://127.0.0.1:{port}", a.batch, a.max_tokens))
            finally:
                proc.terminate()
                proc.wait(20)
        res["search_in_process"] = search_in_process(8, a.search_seconds)
        res["search_in_process_batched"] = search_in_process(8, a.search_seconds, batched=True)
        res["engine_floor"] = engine_floor(gen, a.batch, a.max_tokens, a.threads, dtype)
        res["search_http_vs_in_process"] = res["search_http"]["qps"] / res["search_in_process"]["qps"]
        res["dtype"] = dtype or default_dtype(gen)
        report["generators"][key] = res
        b, t, m = res["batching"], res["ttft"], res["mixed"]
        print(f"\n== {gen}, {res['dtype']} weights (server ready in {ready_s:.1f} s)")
        print(f"{'measurement':48} {'value':>12}  target")
        print(f"{'warm TTFT p50 (3 passages), s':48} {t['ttft_p50_s']:12.2f}  <= 1.5")
        print(f"{'  of which retrieval + prefill p50, s':48} {t['prefill_s_p50'] or float('nan'):12.2f}")
        print(f"{'  decoding p50, s / tokens per s':48} {t['decode_s_p50'] or float('nan'):12.2f}  "
              f"({t['decode_tokens_per_s'] or float('nan'):.1f} tok/s)")
        label_b = f"{b['n']} chats concurrent / sequential"
        label_m = f"mixed load, {m['clients']} clients: errors"
        print(f"{label_b:48} {b['ratio']:12.2f}  <= 0.4 "
              f"({b['concurrent_s']:.1f} s vs {b['sequential_s']:.1f} s)")
        if "batching_waves" in res:
            w = res["batching_waves"]
            print(f"{'  same, batches only of requests arriving together':48} {w['ratio']:12.2f}  "
                  f"({w['concurrent_s']:.1f} s vs {w['sequential_s']:.1f} s)")
        if "batching_long" in res:
            bl = res["batching_long"]
            print(f"{'  same, max_tokens ' + str(bl['max_tokens']):48} {bl['ratio']:12.2f}  "
                  f"({bl['concurrent_s']:.1f} s vs {bl['sequential_s']:.1f} s, {bl['tokens_sequential']} tokens)")
        f = res["engine_floor"]
        print(f"{'  in process: batched / sequential (floor)':48} {f['floor_ratio']:12.2f}  "
              f"prefill {100 * f['prefill_share_of_sequential']:.0f}% of sequential, "
              f"{f['prompt_tokens_mean']:.0f} prompt tokens, {1000 * f['decode_s_per_token_single']:.0f} ms/token")
        print(f"{'/search over HTTP vs in process (conc. 8)':48} {res['search_http_vs_in_process']:12.2f}  >= 0.8 "
              f"({res['search_http']['qps']:.0f} vs {res['search_in_process']['qps']:.0f} q/s)")
        print(f"{'  in process, batches of 8 queries (ceiling)':48} {res['search_in_process_batched']['qps']:12.0f}  q/s")
        print(f"{label_m:48} {m['errors']:12d}  0")
        print(f"{'  requests/s; search p50/p99 ms':48} {m['requests_per_s']:12.2f}  "
              f"{m['search_p50_ms']:.0f}/{m['search_p99_ms']:.0f}")
        print(f"{'  chat p50/p99 s; TTFT p50/p99 s':48} {m['chat_p50_s']:12.2f}  {m['chat_p99_s']:.1f}; "
              f"{m['ttft_p50_s']:.2f}/{m['ttft_p99_s']:.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
