"""The oracle scripts' JSON contract: what the TypeScript tests send and read back."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_finance_py import jsonio
from finetune_finance_py.oracles import bleu, gguf_dump, rouge

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def run_script(module: str, request: object) -> object:
    """Runs an oracle as the tests do: its own process, JSON on stdin, JSON on stdout."""
    script = PACKAGE_ROOT / "finetune_finance_py" / "oracles" / f"{module}.py"
    done = subprocess.run(
        [sys.executable, str(script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(PACKAGE_ROOT), "PATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_jsonio_round_trip_and_non_finite_numbers() -> None:
    out = io.StringIO()
    jsonio.run(lambda req: {"echo": req, "bad": [math.nan, math.inf]}, stdin=io.StringIO('{"a": [1, "é"]}'), stdout=out)
    assert json.loads(out.getvalue()) == {"echo": {"a": [1, "é"]}, "bad": ["nan", "inf"]}


def test_jsonio_rejects_input_that_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        jsonio.run(lambda req: req, stdin=io.StringIO("not json"), stdout=io.StringIO())
    assert exit_info.value.code == 1
    assert "stdin is not JSON" in capsys.readouterr().err


def test_bleu_perfect_match_and_known_partial_score() -> None:
    answer = run_script("bleu", {
        "corpus": [{"hypotheses": ["the cat sat on the mat"], "references": [["the cat sat on the mat"]]}],
        "sentence": [{"hypothesis": "the cat sat", "references": ["the cat sat on the mat"], "options": {"smoothMethod": "none"}}],
    })
    assert answer["version"].startswith("2.6")
    assert answer["corpus"][0]["score"] == pytest.approx(100.0)
    sentence = answer["sentence"][0]
    # 3 of 6 words, every n-gram of the hypothesis matches: BLEU = brevity penalty exp(1 - 6/3)
    assert sentence["counts"] == [3, 2, 1, 0]
    assert sentence["score"] == pytest.approx(100 * math.exp(1 - 6 / 3))


def test_bleu_options_reach_sacrebleu() -> None:
    request = {"hypothesis": "The Cat", "references": ["the cat"]}
    cased = bleu.handle({"sentence": [request]})["sentence"][0]
    lower = bleu.handle({"sentence": [{**request, "options": {"lowercase": True}}]})["sentence"][0]
    assert cased["counts"][0] == 0
    assert lower["counts"][0] == 2


def test_rouge_stemmer_switch() -> None:
    answer = rouge.handle({"pairs": [["the cats are running", "the cat runs"]], "stemmer": [False, True]})
    plain = answer["results"]["false"][0]["rouge1"]
    stemmed = answer["results"]["true"][0]["rouge1"]
    assert plain["precision"] == pytest.approx(1 / 4)
    # with Porter, cats -> cat and running/runs -> run: 3 of 4 prediction tokens match
    assert stemmed["precision"] == pytest.approx(3 / 4)


def test_gguf_dump_reads_a_file_written_by_gguf_py(tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "t.gguf"
    writer = GGUFWriter(str(path), arch="llama")
    writer.add_context_length(64)
    writer.add_rope_freq_base(10000.0)
    writer.add_token_list(["a", "b"])
    writer.add_uint64("custom.big", 2**40)
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    writer.add_tensor("w", weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    dumped = gguf_dump.handle({"files": [str(path)]})["files"][0]
    meta = {e["key"]: e for e in dumped["metadata"]}
    assert meta["llama.context_length"]["types"] == ["UINT32"] == meta["llama.context_length"]["canonical"]
    assert meta["llama.rope.freq_base"]["value"] == 10000.0
    assert meta["tokenizer.ggml.tokens"]["types"] == ["ARRAY", "STRING"]
    assert meta["tokenizer.ggml.tokens"]["value"] == ["a", "b"]
    assert meta["custom.big"]["value"] == str(2**40)
    assert meta["custom.big"]["canonical"] is None
    (tensor,) = dumped["tensors"]
    assert tensor["name"] == "w" and tensor["type"] == "F32" and tensor["dims"] == [3, 2]
    import hashlib
    assert tensor["sha256"] == hashlib.sha256(weights.tobytes()).hexdigest()
