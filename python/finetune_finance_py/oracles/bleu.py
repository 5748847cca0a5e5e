"""sacrebleu as the oracle for src/Metrics/Bleu.ts.

Request: {"corpus": [{"hypotheses": [...], "references": [[stream 1...], ...], "options": {...}}],
          "sentence": [{"hypothesis": "...", "references": [...], "options": {...}}]}
options use the TypeScript names: tokenize ("13a" | "intl" | "char" | "none"), smoothMethod, smoothValue,
lowercase, maxNgramOrder, effectiveOrder. Answer: the same lists of {score, counts, totals, precisions, bp,
sysLen, refLen}, plus sacrebleu's version. Also: "tokenize13a": [text] -> sacrebleu's 13a tokenization of each
text after BLEU's own rstrip(); "errors": [{"hypotheses", "references"}] -> the message corpus_score raises.
"""

from __future__ import annotations

from typing import Any

import sacrebleu
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from finetune_finance_py import jsonio


def make_bleu(options: dict[str, Any], sentence: bool) -> BLEU:
    return BLEU(
        lowercase=bool(options.get("lowercase", False)),
        tokenize=options.get("tokenize", "13a"),
        smooth_method=options.get("smoothMethod", "exp"),
        smooth_value=options.get("smoothValue"),
        max_ngram_order=int(options.get("maxNgramOrder", 4)),
        # sacrebleu.sentence_bleu turns effective order on; BLEU() leaves it off
        effective_order=bool(options.get("effectiveOrder", sentence)),
    )


def as_dict(score: Any) -> dict[str, Any]:
    return {
        "score": score.score,
        "counts": list(score.counts),
        "totals": list(score.totals),
        "precisions": list(score.precisions),
        "bp": score.bp,
        "sysLen": score.sys_len,
        "refLen": score.ref_len,
    }


def handle(request: dict[str, Any]) -> dict[str, Any]:
    cache: dict[tuple[str, bool], BLEU] = {}

    def bleu_for(options: dict[str, Any], sentence: bool) -> BLEU:
        key = (repr(sorted(options.items())), sentence)
        if key not in cache:
            cache[key] = make_bleu(options, sentence)
        return cache[key]

    corpus = [
        as_dict(bleu_for(case.get("options", {}), False).corpus_score(case["hypotheses"], case["references"]))
        for case in request.get("corpus", [])
    ]
    sentence = [
        as_dict(bleu_for(case.get("options", {}), True).sentence_score(case["hypothesis"], case["references"]))
        for case in request.get("sentence", [])
    ]
    tokenizer = Tokenizer13a()
    tokenized = [tokenizer(text.rstrip()) for text in request.get("tokenize13a", [])]
    errors = []
    for case in request.get("errors", []):
        try:
            BLEU().corpus_score(case["hypotheses"], case["references"])
            errors.append(None)
        except Exception as error:  # the message is what the caller compares
            errors.append(str(error))
    return {"version": sacrebleu.__version__, "corpus": corpus, "sentence": sentence, "tokenize13a": tokenized, "errors": errors}


if __name__ == "__main__":
    jsonio.run(handle)
