"""rouge-score's RougeScorer as the oracle for src/Metrics/Rouge.ts.

Request: {"pairs": [[prediction, reference], ...], "stemmer": [false, true]}
Answer: {"version": ..., "results": {"false"|"true": [{rouge1: {precision, recall, fmeasure}, ...}, ...]}}
Also: "porter": {"words": [...], "modes": ["NLTK_EXTENSIONS", ...]} -> {"porter": {mode: [stem, ...]}} from NLTK's
PorterStemmer, the stemmer rouge-score uses (in NLTK_EXTENSIONS mode).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer

from finetune_finance_py import jsonio

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def handle(request: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, list[dict[str, dict[str, float]]]] = {}
    for use_stemmer in request.get("stemmer", [False]):
        scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=bool(use_stemmer))
        rows = []
        for prediction, reference in request["pairs"]:
            # rouge-score's argument order is (target, prediction)
            scores = scorer.score(reference, prediction)
            rows.append(
                {t: {"precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure} for t, s in scores.items()}
            )
        results["true" if use_stemmer else "false"] = rows
    porter_request = request.get("porter", {"words": [], "modes": []})
    stems = {
        mode: [PorterStemmer(mode).stem(word) for word in porter_request["words"]] for mode in porter_request["modes"]
    }
    return {
        "version": metadata.version("rouge-score"),
        "nltk": metadata.version("nltk"),
        "results": results,
        "porter": stems,
    }


if __name__ == "__main__":
    jsonio.run(handle)
