"""rouge-score's RougeScorer as the oracle for src/Metrics/Rouge.ts.

Request: {"pairs": [[prediction, reference], ...], "stemmer": [false, true]}
Answer: {"version": ..., "results": {"false"|"true": [{rouge1: {precision, recall, fmeasure}, ...}, ...]}}
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

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
    return {"version": metadata.version("rouge-score"), "results": results}


if __name__ == "__main__":
    jsonio.run(handle)
