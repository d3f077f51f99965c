"""The OneGen index folder and recall evaluation, the CLI commands, and (slow) the real SmolLM2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.onegen.helpers import DOCS
from tests.tolerance import assert_f32_close, model_terms
from unirag.corpus import Passage


def test_index_folder_and_recall(onegen_model, tmp_path):
    from unirag.eval import RetrievalQuery, evaluate_retrieval
    from unirag.index import Index
    from unirag.onegen.docindex import build_onegen_index, open_onegen_index

    passages = [Passage(id=k, title=k, text=v.split(". ", 1)[1]) for k, v in DOCS.items()]
    folder = build_onegen_index(passages, tmp_path / "idx", onegen_model, name="onegen:tiny", batch_size=2,
                                progress=False)
    index = Index.load(folder)
    assert len(index) == 5 and index.manifest.encoder == "onegen:tiny"
    vec = onegen_model.embed_documents([p.contents for p in passages])
    # batches of 2 when indexed, of another size here: other padding and kernel shapes; unit vectors
    span = onegen_model.config.max_doc_tokens + 1
    assert_f32_close(index.reconstruct(np.arange(5)), vec,
                     model_terms(onegen_model.hf_model, span, log_softmax=False) + vec.shape[1])
    # the one dense retriever, queried by the model's own query vectors, ranks as brute force does
    questions = ["Which river flows through Cairo?", "Who directed Alien?", "What is the capital of France?"]
    q = onegen_model.query_vectors([onegen_model.chat_prompt(x, "[RQ]") for x in questions])
    ranked = [[passages[j].id for j in row] for row in np.argsort(-(q @ vec.T), axis=1)]
    retriever = open_onegen_index(folder, onegen_model)
    assert_f32_close(retriever.embed_queries(questions), q, model_terms(onegen_model.hf_model, 64, log_softmax=False))
    assert retriever.search(questions, 5).ids == ranked
    gold = [r[1] for r in ranked]  # every gold page sits at rank 2 of the brute-force ranking
    res = evaluate_retrieval(retriever, [RetrievalQuery(str(i), x, [g]) for i, (x, g) in
                                         enumerate(zip(questions, gold))], ks=(1, 2))
    assert res["recall@1"] == 0.0 and res["recall@2"] == 1.0 and res["mrr@2"] == pytest.approx(0.5)


def test_cli_data_and_train(tmp_path, tiny_dir):
    from typer.testing import CliRunner

    import unirag.cli.onegen_train  # noqa: F401  (registers the commands)
    from unirag.cli.groups import app
    from tests.onegen.test_data import HOTPOT

    (tmp_path / "h.json").write_text(json.dumps(HOTPOT))
    runner = CliRunner()
    r = runner.invoke(app, ["train", "onegen-data", "--source", "hotpotqa", "--input", str(tmp_path / "h.json"),
                            "--out", str(tmp_path / "d"), "--negatives", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["retrievals"] == 2
    cfg = {"train_file": str(tmp_path / "d" / "train.jsonl"), "docs_file": str(tmp_path / "d" / "docs.jsonl"),
           "model": {"base_model": str(tiny_dir), "max_doc_tokens": 16}, "lora": None,
           "output_dir": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "ck"), "max_steps": 2,
           "batch_size": 1, "log_every": 1}
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = runner.invoke(app, ["train", "onegen", "--config", str(tmp_path / "c.yaml")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "onegen_config.json").is_file()
    bad = dict(cfg, lora={"rank": 4})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = runner.invoke(app, ["train", "onegen", "--config", str(tmp_path / "bad.yaml")])
    assert r.exit_code != 0 and "rank" in str(r.exception)


@pytest.mark.slow
def test_smollm2_labels_and_vectors():
    from unirag.onegen.collator import IGNORE, encode_example
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.data import parse_example
    from unirag.onegen.model import OneGenModel

    model = OneGenModel.from_base(OneGenConfig(max_doc_tokens=32))
    row = {"messages": [{"role": "user", "content": "Which river flows through Cairo?"},
                        {"role": "assistant", "content": "[RQ]<passage>Nile. The Nile is a river.</passage>The Nile"}],
           "retrievals": [{"positives": ["Nile"]}]}
    enc = encode_example(parse_example(row, model.config, {"Nile": "x"}, "m"), model.tokenizer, model.config)
    kept = model.tokenizer.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
    assert kept == "[RQ]The Nile<|im_end|>"
    v = model.embed_documents(["Nile. The Nile is a river."])
    q = model.query_vectors([model.chat_prompt("Which river flows through Cairo?", "[RQ]")])
    assert v.shape == q.shape == (1, 576)


def test_training_positives_ignore_entities(tmp_path):
    from unirag.onegen.data import training_positives

    f = tmp_path / "train.jsonl"
    rows = [{"retrievals": [{"positives": ["Nile"], "negatives": ["Cairo"]}, {"positives": ["entity:Alien"]}]},
            {"retrievals": [{"positives": ["Alien (film)", "Nile"]}]}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert training_positives(f) == {"Nile", "Alien (film)"}
