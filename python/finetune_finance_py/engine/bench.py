"""Benchmark helpers for bench/train.ts (not used in training).

  python -m finetune_finance_py.engine.bench make-base SHAPE.json FOLDER   random-init HF folder of a shape
  python -m finetune_finance_py.engine.bench reference ARGS.json           the plain PyTorch reference loop

The reference loop is what a user writes by hand: transformers model + PEFT LoRA, `model(input_ids, labels).loss`
with -100 on prompt positions, backward, clip_grad_norm_, AdamW. It prints one JSON line: steady-state tokens/s
and tokens per CPU-second (the first step is warm-up and not counted) and each step's seconds, CPU seconds and tokens.
"""
import json
import sys
import time


def make_base(shape_file: str, folder: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with open(shape_file, encoding="utf8") as f:
        shape = json.load(f)
    torch.manual_seed(0)
    config = LlamaConfig(**shape, torch_dtype="float32")
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)


def reference(args_file: str) -> None:
    with open(args_file, encoding="utf8") as f:
        a = json.load(f)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(a["base"], dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    b, s, vocab = a["batch"], a["seq"], model.config.vocab_size
    ids = torch.tensor([[3 + ((r * 7919 + i * 104729) % (vocab - 3)) for i in range(s)] for r in range(b)])
    labels = ids.clone()
    labels[:, : s // 4] = -100
    steps = []
    for k in range(a["steps"] + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if k > 0:
            steps.append({"seconds": time.perf_counter() - t0, "cpuSeconds": time.process_time() - c0, "tokens": b * s})
    wall = sum(x["seconds"] for x in steps)
    cpu = sum(x["cpuSeconds"] for x in steps)
    tokens = b * s * a["steps"]
    print(json.dumps({"tokensPerSecond": tokens / wall, "tokensPerCpuSecond": tokens / cpu, "wallSeconds": wall, "cpuSeconds": cpu,
                      "steps": steps}))


if __name__ == "__main__":
    if sys.argv[1] == "make-base":
        make_base(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "reference":
        reference(sys.argv[2])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
