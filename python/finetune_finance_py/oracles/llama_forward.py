"""transformers and PEFT as the oracle for src/Model/LlamaModel.ts, src/Model/AdapterConfig.ts and the PEFT files.

Request: {"threads": int, "cases": [case, ...]}; every case has "id", "kind", "folder" (a Hugging Face folder the
project wrote) and "tokens" (a list of token-id rows of equal length). Kinds:
- "logits": {"modelClass": "llama" | "mistral"} -> the float32 logits of LlamaForCausalLM (full causal attention,
  a declared sliding_window is not applied) or MistralForCausalLM (eager attention, the window applied);
- "peftLoad": {"adapter": folder} -> PeftModel.from_pretrained over LlamaForCausalLM, the warnings it raised
  (Python warnings and the transformers/peft loggers), and the adapted logits;
- "peftMake": {"out": folder, "lora": LoraConfig kwargs, "seed": int} -> a PEFT adapter made by PEFT itself
  (init_lora_weights=False, so B is not zero), saved with save_pretrained to "out", and its logits;
- "patternKeys": {"patterns": {key: value}, "modules": [...]} -> PEFT's get_pattern_key for each module.
Logits come back as base64 little-endian float32, shape [rows, length, vocab]. The answer names the versions.
"""

from __future__ import annotations

import base64
import logging
import warnings
from typing import Any

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.other import get_pattern_key
from transformers import LlamaForCausalLM, MistralForCausalLM

from finetune_finance_py import jsonio


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def _load(folder: str, model_class: str):
    if model_class == "mistral":
        model = MistralForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    else:
        model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def _logits(model, tokens: list[list[int]]) -> dict[str, Any]:
    with torch.no_grad():
        ids = torch.tensor(tokens, dtype=torch.long)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.to(torch.float32).contiguous()
    return {
        "shape": list(out.shape),
        "logits": base64.b64encode(out.numpy().astype("<f4").tobytes()).decode("ascii"),
    }


def _tied(model) -> bool:
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()


def _captured(action):
    """Runs action() and returns (result, every warning it raised through `warnings` or the library loggers)."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("transformers", "peft")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = action()
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return result, [f"{w.category.__name__}: {w.message}" for w in caught] + handler.messages


def handle_case(case: dict[str, Any]) -> dict[str, Any]:
    kind = case["kind"]
    if kind == "patternKeys":
        keys = list(case["patterns"].keys())
        return {"id": case["id"], "keys": [get_pattern_key(keys, m) for m in case["modules"]]}
    if kind == "logits":
        model = _load(case["folder"], case["modelClass"])
        return {"id": case["id"], "tied": _tied(model), **_logits(model, case["tokens"])}
    if kind == "peftLoad":
        base = _load(case["folder"], "llama")
        model, messages = _captured(lambda: PeftModel.from_pretrained(base, case["adapter"]).eval())
        scales = {
            name: float(module.scaling["default"])
            for name, module in model.named_modules()
            if hasattr(module, "scaling") and isinstance(getattr(module, "scaling"), dict) and "default" in module.scaling
        }
        return {"id": case["id"], "warnings": messages, "scales": scales, **_logits(model, case["tokens"])}
    if kind == "peftMake":
        torch.manual_seed(int(case["seed"]))
        base = _load(case["folder"], "llama")
        config = LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, lora_dropout=0.0, **case["lora"])
        model = get_peft_model(base, config).eval()
        model.save_pretrained(case["out"])
        return {"id": case["id"], **_logits(model, case["tokens"])}
    raise ValueError(f"unknown case kind {kind!r}")


def handle(request: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(int(request.get("threads", 1)))
    torch.manual_seed(0)
    return {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "results": [handle_case(case) for case in request["cases"]],
    }


if __name__ == "__main__":
    np.seterr(all="raise")
    jsonio.run(handle)
