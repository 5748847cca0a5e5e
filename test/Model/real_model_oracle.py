"""Oracles for the real-model fidelity test (stdin: one JSON request, stdout: one JSON answer).

{"op": "forward", "folder": F, "ids": [...], "out": PATH}
    LlamaForCausalLM (transformers) on the Hugging Face folder F in float32 on the CPU (eager attention, no cache);
    writes softmax(logits) of every position to PATH as raw little-endian float32, [len(ids), vocab] row-major.
{"op": "dequantize", "gguf": G, "tensors": [names], "out": DIR}
    gguf-py's own dequantize() of each named tensor of G, written as DIR/<name>.f32 (ggml order, flat).
"""
import json
import os
import sys

request = json.load(sys.stdin)
if request["op"] == "forward":
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(request["folder"], dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([request["ids"]], dtype=torch.long), use_cache=False).logits[0]
        probs = torch.softmax(logits.double(), dim=-1).float().contiguous()
    probs.numpy().astype("<f4").tofile(request["out"])
    print(json.dumps({"positions": probs.shape[0], "vocab": probs.shape[1]}))
elif request["op"] == "dequantize":
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(request["gguf"])
    by_name = {t.name: t for t in reader.tensors}
    types = {}
    for name in request["tensors"]:
        t = by_name[name]
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
        values.tofile(os.path.join(request["out"], name + ".f32"))
        types[name] = t.tensor_type.name
    print(json.dumps({"types": types, "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "?"}))
else:
    raise SystemExit("unknown op " + request["op"])
