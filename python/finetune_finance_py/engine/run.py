"""The torch engine's training loop: transformers + PEFT under a plain loop with the TypeScript trainer's semantics.

One optimizer step = the plan's micro-batches; the loss is the answer tokens' summed cross-entropy over the whole
accumulation window divided by their count, then global-norm clipping, AdamW (torch's), the LR schedule of the
handover. Data order is the handover's plan (made once, by the TypeScript side); dropout is reseeded from
(seed, step, micro-batch, rank); so a run resumed from a checkpoint repeats an uninterrupted one bit for bit.

Distributed (torchrun): each micro-batch's examples are dealt to the ranks (rank r takes examples r, r+W, ...);
each rank divides its summed loss by the global answer-token count and DDP (or FSDP) averages the gradients, which
is scaled back by W: the update equals one process's on the whole batch. Rank 0 alone evaluates, writes
checkpoints and talks on the pipe.
"""
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback

import numpy as np

from . import events
from .data import Examples, Plan, collate
from .events import EngineError, emit
from .schedule import lr_at, mix_seed

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


class Stop:
    """Set by SIGINT/SIGTERM; the loop checks it between steps, saves and exits 130."""

    requested = False


def _on_signal(signum, frame):
    Stop.requested = True


def _peft_key(name: str) -> str:
    # PEFT parameter `base_model.model.<module>.lora_A.default.weight` -> file key `base_model.model.<module>.lora_A.weight`
    return name.replace(".default.", ".")


def load_job(path: str) -> dict:
    try:
        with open(path, encoding="utf8") as f:
            job = json.load(f)
    except (OSError, ValueError) as e:
        raise EngineError("bad_job", f"{path}: cannot read the job ({e})")
    if job.get("version") != 1:
        raise EngineError("bad_job", f"{path}: version {job.get('version')!r} is not 1")
    return job


def _import_stack():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import peft  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        raise EngineError("missing_package", f"the torch engine needs torch, transformers, peft and safetensors: {e}")


def _deepspeed_setup(job: dict):
    """For --deepspeed: the package and its config, checked before any process group or model exists, so a missing
    package is one clear line (what to install, or what to use instead) and not a failure after minutes of loading."""
    cfg_file = job["distributed"].get("deepspeedConfig")
    try:
        import deepspeed
    except ImportError as e:
        raise EngineError("missing_package", f"--deepspeed {cfg_file} needs the deepspeed package, which {sys.executable} "
                          f"cannot import ({e}): install it into that environment (pip install deepspeed; building its "
                          "CUDA ops needs the CUDA toolkit) and pass it with --python, or train without --deepspeed "
                          "(DDP is the default; --fsdp shards the decoder layers)")
    try:
        with open(cfg_file, encoding="utf8") as f:
            ds_config = json.load(f)
    except (OSError, ValueError) as e:
        raise EngineError("bad_job", f"{cfg_file}: cannot read the DeepSpeed config ({e})")
    if not isinstance(ds_config, dict):
        raise EngineError("bad_job", f"{cfg_file}: a DeepSpeed config is a JSON object")
    return deepspeed, ds_config


def _device(job, torch, local_rank: int):
    want = job["device"]
    if want == "cuda" and not torch.cuda.is_available():
        raise EngineError("no_cuda", "device cuda was asked for but torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    if job["mode"] == "qlora" and not torch.cuda.is_available():
        raise EngineError("qlora_needs_cuda", "QLoRA on the torch engine needs a CUDA device (bitsandbytes NF4); "
                          "on CPU use --engine tfjs, whose NF4 path runs anywhere, or --mode lora")
    if want in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _load_model(job, torch, device):
    from transformers import AutoConfig, AutoModelForCausalLM

    base = job["baseModel"]
    try:
        AutoConfig.from_pretrained(base)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError for what is not a model folder
        raise EngineError("bad_base_model", f"{base}: not a Hugging Face model folder transformers can load ({e})")
    bf16 = device.type == "cuda" and job["bf16"] != "off" and torch.cuda.is_bf16_supported()
    if job["bf16"] == "on" and not bf16:
        raise EngineError("no_cuda", "bf16 was asked for but needs a CUDA device that supports it")
    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs = {"dtype": dtype}
    if job["mode"] == "qlora":
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError as e:
            raise EngineError("missing_package", f"QLoRA needs bitsandbytes: {e}")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise EngineError("bad_base_model", f"{base}: cannot load the weights ({e})")
    if job["mode"] != "qlora":
        model.to(device)
    return model, dtype


def _apply_lora(job, model, torch):
    """The handover's initial adapter (config and weights, PEFT layout) made trainable: both engines start from the
    same weights, and PEFT applies the same targets, ranks, alphas and rsLoRA the TypeScript side wrote."""
    from peft import PeftModel

    if job["mode"] == "qlora":
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=job["gradientCheckpointing"])
    try:
        peft_model = PeftModel.from_pretrained(model, job["initialAdapter"], is_trainable=True)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise EngineError("bad_job", f"{job['initialAdapter']}: PEFT cannot load the initial adapter ({e})")
    trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    if not trainable:
        raise EngineError("bad_job", f"{job['initialAdapter']}: no module of the model matches the adapter's targets")
    return peft_model, trainable


def _loss_module(torch, llama):
    """Wraps the model so DDP/FSDP see one forward: summed cross-entropy over the loss positions only (the
    vocabulary projection runs on those rows alone, as in the tfjs trainer). The positions come as flat indices
    computed on the host (`_tensors`): a boolean mask would cost a device sync (nonzero) in every micro-batch."""
    import torch.nn.functional as F

    class SummedAnswerLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.llama = llama

        def forward(self, input_ids, position_ids, attention_mask, loss_index, targets):
            hidden = self.llama.model(input_ids=input_ids, position_ids=position_ids,
                                      attention_mask=attention_mask, use_cache=False).last_hidden_state
            if loss_index.shape[0] == 0:
                # keeps every LoRA weight in the graph (a rank with no answer tokens still joins the all-reduce)
                return hidden.float().sum() * 0.0
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, loss_index)
            logits = self.llama.lm_head(picked).float()
            return F.cross_entropy(logits, targets, reduction="sum")

    return SummedAnswerLoss()


def _tensors(torch, batch, device):
    ids = torch.from_numpy(batch.input_ids).to(device)
    pos = torch.from_numpy(batch.position_ids).to(device)
    mask = None
    if batch.packed:
        # block-diagonal causal mask: a token sees the earlier tokens of its own example only (padding sees padding)
        seg = torch.from_numpy(batch.segment_ids).to(device)
        t = seg.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
        mask = ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None, :, :]
    # the loss positions, row-major (the order a boolean mask selects), and their targets
    where = np.flatnonzero(batch.loss_mask.reshape(-1))
    loss_index = torch.from_numpy(where).to(device)
    targets = torch.from_numpy(np.ascontiguousarray(batch.targets.reshape(-1)[where])).to(device)
    return ids, pos, mask, loss_index, targets


def _assign(p, t) -> None:
    """Copies a full tensor into a parameter, sharding it first when FSDP holds the parameter as a DTensor."""
    t = t.to(p.dtype)
    if hasattr(p, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        t = distribute_tensor(t.to(p.device_mesh.device_type), p.device_mesh, p.placements)
    p.copy_(t)


def _atomic_json(path: str, value) -> None:
    with open(path, "w", encoding="utf8") as f:
        f.write(json.dumps(value, indent=2, allow_nan=False) + "\n")


def _list_checkpoints(run_dir: str):
    if not os.path.isdir(run_dir):
        return []
    steps = []
    for name in os.listdir(run_dir):
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            steps.append(int(name[len("checkpoint-"):]))
    return sorted(steps)


def main(argv) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m finetune_finance_py.engine JOB.json\n")
        return 2
    rank = int(os.environ.get("RANK", "0"))
    events.configure(rank == 0, int(os.environ.get("LOCAL_RANK", "0")) == 0)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return train(load_job(argv[0]), rank)
    except EngineError as e:
        traceback.print_exc(file=sys.stderr)
        emit("error", kind=e.kind, message=e.message)
        return e.exit_code
    except Exception as e:  # the traceback goes to the log; the user gets one line
        traceback.print_exc(file=sys.stderr)
        text = str(e)
        oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in text.lower()
        if oom:
            emit("error", kind="oom", message="out of memory: lower batchSize or maxSeqLength, turn on "
                 f"gradientCheckpointing, or use qlora ({text.splitlines()[0] if text else type(e).__name__})")
            return 5
        emit("error", kind="internal", message=f"{type(e).__name__}: {text.splitlines()[0] if text else ''}")
        return 1


def train(job: dict, rank: int) -> int:
    _import_stack()
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    strategy = job["distributed"]["strategy"]
    ds = _deepspeed_setup(job) if strategy == "deepspeed" else None
    if job.get("threads") is not None:
        torch.set_num_threads(job["threads"])
    device = _device(job, torch, local_rank)
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)

    model, dtype = _load_model(job, torch, device)
    if job["gradientCheckpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model, trainable = _apply_lora(job, model, torch)
    llama = peft_model.get_base_model()
    params = [p for _, p in trainable]
    names = [_peft_key(n) for n, _ in trainable]
    loss_module = _loss_module(torch, llama)

    engine = None
    if world > 1 and strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        wrapped = DistributedDataParallel(loss_module, device_ids=[local_rank] if device.type == "cuda" else None)
    elif world > 1 and strategy == "fsdp":
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError as e:
            raise EngineError("missing_package", f"--fsdp needs torch >= 2.6 (fully_shard): {e}")
        for layer in llama.model.layers:
            fully_shard(layer)
        wrapped = loss_module
        # fully_shard swaps each layer's parameters for sharded ones: the optimizer must hold those
        trainable = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
        params = [p for _, p in trainable]
    else:
        wrapped = loss_module

    sharded = world > 1 and strategy == "fsdp"
    opt = job["optimizer"]
    optimizer = torch.optim.AdamW(params, lr=opt["learningRate"], betas=(opt["beta1"], opt["beta2"]), eps=opt["epsilon"],
                                  weight_decay=opt["weightDecay"])
    if ds is not None:
        deepspeed, ds_config = ds
        # the job's accumulation, micro-batch and clipping win over the file's (one source of truth)
        ds_config.update(gradient_accumulation_steps=job["gradientAccumulationSteps"],
                         train_micro_batch_size_per_gpu=max(1, job["batchSize"] // world),
                         gradient_clipping=opt["maxGradNorm"])
        ds_config.pop("train_batch_size", None)
        engine, optimizer, _, _ = deepspeed.initialize(model=loss_module, optimizer=optimizer, config=ds_config)
        wrapped = engine

    data_dir = job["data"]["dir"]
    train_set = Examples(data_dir, "train")
    val_set = Examples(data_dir, "validation") if job["data"]["validationCount"] > 0 else None
    gen_set = Examples(data_dir, "generation") if job["evaluation"]["generationSamples"] > 0 else None
    plan = Plan(data_dir)
    total = len(plan)
    schedule = job["schedule"]
    run_dir = job["runDir"]
    pad_id = job["padId"]
    packing = job["packing"]
    max_len = job["maxSeqLength"]
    metric_for_best = job["metricForBest"]

    state = {
        "globalStep": 0, "epoch": 0.0, "totalSteps": total, "metricForBest": metric_for_best, "bestMetric": None,
        "bestStep": None, "evaluationsWithoutImprovement": 0, "evaluations": [], "tokensSeen": 0,
    }

    # resume: the newest complete checkpoint (a killed save leaves only checkpoint-N.tmp, which is never read)
    if job["resume"]:
        steps = _list_checkpoints(run_dir)
        if steps:
            from safetensors.torch import load_file
            ckpt = os.path.join(run_dir, f"checkpoint-{steps[-1]}")
            with open(os.path.join(ckpt, "trainer_state.json"), encoding="utf8") as f:
                saved = json.load(f)
            if saved["totalSteps"] != total:
                raise EngineError("bad_job", f"{ckpt} was made for {saved['totalSteps']} steps but this job has {total}")
            weights = load_file(os.path.join(ckpt, ADAPTER_WEIGHTS))
            with torch.no_grad():
                for key, p in zip(names, params):
                    _assign(p, weights[key])
            saved_opt = torch.load(os.path.join(ckpt, OPTIMIZER_FILE), map_location=device, weights_only=True)
            if sharded:
                from torch.distributed.tensor import distribute_tensor
                for key, p in zip(names, params):
                    optimizer.state[p] = {
                        k: distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements)
                        if torch.is_tensor(v) and v.dim() > 0 else v
                        for k, v in saved_opt["state"][key].items()
                    }
            else:
                optimizer.load_state_dict(saved_opt)
            state = saved
            emit("resumed", step=steps[-1], dir=ckpt)

    def save():
        step = state["globalStep"]
        final = os.path.join(run_dir, f"checkpoint-{step}")
        if sharded:
            # every rank joins gathering the full AdamW moments (by adapter key) that rank 0 writes
            opt_state = {"state": {
                key: {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).cpu() if torch.is_tensor(v) else v
                      for k, v in optimizer.state.get(p, {}).items()}
                for key, p in zip(names, params)
            }}
        else:
            opt_state = optimizer.state_dict()
        if rank == 0:
            tmp = final + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in params]
            save_file({k: t.detach().to("cpu", torch.float32).contiguous() for k, t in zip(names, full)},
                      os.path.join(tmp, ADAPTER_WEIGHTS), metadata={"format": "pt"})
            # the handover's adapter_config.json, byte for byte: both engines' adapters have the same config file
            shutil.copyfile(os.path.join(job["initialAdapter"], ADAPTER_CONFIG), os.path.join(tmp, ADAPTER_CONFIG))
            torch.save(opt_state, os.path.join(tmp, OPTIMIZER_FILE))
            _atomic_json(os.path.join(tmp, "scheduler.json"), {**schedule, "lastStep": step})
            _atomic_json(os.path.join(tmp, "rng_state.json"), {"seed": job["seed"], "globalStep": step})
            _atomic_json(os.path.join(tmp, "trainer_state.json"), state)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            limit = job.get("saveTotalLimit")
            if limit is not None:
                steps = _list_checkpoints(run_dir)
                keep = set(steps[-limit:]) | ({state["bestStep"]} if state["bestStep"] is not None else set())
                for s in steps:
                    if s not in keep:
                        shutil.rmtree(os.path.join(run_dir, f"checkpoint-{s}"), ignore_errors=True)
            emit("checkpoint", step=step, dir=final)
        elif hasattr(params[0], "full_tensor"):
            for p in params:  # FSDP: every rank joins the all-gather rank 0 saves from
                p.full_tensor()
        if world > 1:
            dist.barrier()
        save.last = step

    save.last = state["globalStep"] if job["resume"] and state["globalStep"] > 0 else -1

    def evaluate():
        decision = [None]
        # FSDP shards every decoder layer, so all ranks run the forward passes; otherwise rank 0 alone
        if rank == 0 or strategy == "fsdp":
            wrapped_eval = loss_module
            peft_model.eval()
            total_loss, count = 0.0, 0
            with torch.no_grad():
                if val_set is not None:
                    n = len(val_set)
                    for a in range(0, n, job["batchSize"]):
                        b = collate(val_set, range(a, min(n, a + job["batchSize"])), pad_id, packing, max_len)
                        if b.loss_tokens == 0:
                            continue
                        total_loss += float(wrapped_eval(*_tensors(torch, b, device)))
                        count += b.loss_tokens
                rouge = None
                if gen_set is not None:
                    ev = job["evaluation"]
                    outputs = []
                    from transformers import GenerationConfig
                    gen_config = GenerationConfig(max_new_tokens=ev["maxNewTokens"], do_sample=False,
                                                  eos_token_id=list(ev["stopIds"]), pad_token_id=pad_id)
                    for i in range(len(gen_set)):
                        prompt = torch.from_numpy(np.asarray(gen_set.example(i)[0], dtype=np.int64))[None, :].to(device)
                        out = llama.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                             generation_config=gen_config)
                        new = [int(t) for t in out[0, prompt.shape[1]:]]
                        while new and new[-1] in ev["stopIds"]:
                            new.pop()
                        outputs.append(new)
                    if rank == 0:
                        emit("generations", step=state["globalStep"], outputs=outputs)
                        reply = events.read_reply()
                        if reply is not None and isinstance(reply.get("rougeL"), (int, float)):
                            rouge = float(reply["rougeL"])
            peft_model.train()
            # no validation token: no eval loss (None), never a 0 that would win as the best
            eval_loss = None if count == 0 else total_loss / count
            value = rouge if metric_for_best == "rouge" else eval_loss
            best = state["bestMetric"]
            improved = value is not None and (best is None or (value > best if metric_for_best == "rouge" else value < best))
            state["evaluations"].append({"step": state["globalStep"], "evalLoss": eval_loss, "rougeL": rouge})
            if improved:
                state["bestMetric"], state["bestStep"], state["evaluationsWithoutImprovement"] = value, state["globalStep"], 0
            else:
                state["evaluationsWithoutImprovement"] += 1
            emit("eval", step=state["globalStep"], evalLoss=eval_loss, rougeL=rouge)
            decision = [dict(state)]
        if world > 1:
            dist.broadcast_object_list(decision, src=0)
            state.update(decision[0])
        if state["bestStep"] == state["globalStep"] and save.last != state["globalStep"]:
            save()  # the best weights must exist on disk to become the final adapter
        patience = job.get("earlyStoppingPatience")
        return patience is not None and state["evaluationsWithoutImprovement"] >= patience

    trainable_count = sum(p.numel() for p in params)
    emit("start", totalSteps=total, startStep=state["globalStep"], device=str(device), dtype=str(dtype).replace("torch.", ""),
         worldSize=world, strategy=strategy if world > 1 else "single", trainableParameters=trainable_count,
         examples=len(train_set), threads=torch.get_num_threads())

    peft_model.train()
    run_start = time.perf_counter()
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": run_start, "cpu": time.process_time()}
    steps_this_run = 0
    run_tokens = 0
    stopped_early = False
    stop_after = job.get("stopAfterSteps")
    interrupted = False
    for k in range(state["globalStep"], total):
        if Stop.requested:
            interrupted = True
            break
        micro = plan.micro_batches(k)
        loss_tokens = sum(train_set.loss_tokens(i) for idx in micro for i in idx)
        tokens = sum(train_set.length(i) for idx in micro for i in idx)
        denom = max(1, loss_tokens)
        # on the device: one host sync per step (below), none per micro-batch
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        for m, idx in enumerate(micro):
            mine = idx[rank::world]
            torch.manual_seed(mix_seed(job["seed"], k, m, rank))
            if not mine:
                mine, weight = idx[:1], 0.0  # joins the gradient all-reduce with a zero contribution
            else:
                weight = 1.0
            batch = collate(train_set, mine, pad_id, packing, max_len)
            last = m == len(micro) - 1
            # DDP all-reduces on the last micro-batch of the step only
            accumulate_only = world > 1 and strategy == "ddp" and not last
            ctx = wrapped.no_sync() if accumulate_only else _null()
            with ctx:
                loss = wrapped(*_tensors(torch, batch, device)) * (weight / denom)
                step_loss += loss.detach().to(torch.float64)
                if engine is not None:
                    # DeepSpeed divides by its accumulation count and averages over ranks: undo both
                    engine.backward(loss * world * len(micro))
                    if not last:
                        engine.step()
                else:
                    (loss * world if world > 1 else loss).backward()
        if world > 1:
            dist.all_reduce(step_loss, op=dist.ReduceOp.SUM)
        lr = lr_at(schedule, k)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if engine is not None:
            # DeepSpeed clips and steps itself (gradient_clipping and accumulation come from its config)
            engine.step()
            grad_norm = float(engine.get_global_grad_norm() or 0.0)
            loss_value = float(step_loss)
        else:
            # clip_grad_norm_ with an infinite bound measures without clipping (maxGradNorm 0 turns clipping off)
            bound = opt["maxGradNorm"] if opt["maxGradNorm"] > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(params, bound)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # the step's one host sync: its loss and gradient norm together
            loss_value, grad_norm = torch.stack([step_loss, norm.detach().to(torch.float64)]).tolist()
        if not math.isfinite(loss_value):
            raise EngineError("internal", f"step {k + 1}: the loss is {loss_value}")
        state["globalStep"] = k + 1
        state["epoch"] = float(plan.epoch[k])
        state["tokensSeen"] += tokens
        window["loss"] += loss_value
        window["steps"] += 1
        window["tokens"] += tokens
        run_tokens += tokens
        steps_this_run += 1
        done = k + 1
        if done % job["logEvery"] == 0 or done == total:
            now = time.perf_counter()
            per_step = (now - run_start) / steps_this_run
            cpu = time.process_time()
            emit("train", step=done, epoch=state["epoch"], loss=window["loss"] / window["steps"], learningRate=lr,
                 gradNorm=grad_norm, tokensPerSecond=window["tokens"] / max(1e-9, now - window["start"]),
                 etaSeconds=per_step * (total - done), windowSeconds=now - window["start"],
                 cpuSeconds=cpu - window["cpu"], tokens=window["tokens"])
            window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": now, "cpu": cpu}
        if done % job["evalEvery"] == 0 or done == total:
            if evaluate():
                stopped_early = True
        if done % job["saveEvery"] == 0 or done == total:
            if save.last != done:
                save()
        if stopped_early:
            break
        if stop_after is not None and steps_this_run >= stop_after:
            break
    if Stop.requested:
        interrupted = True

    finished = state["globalStep"] >= total or stopped_early
    if not finished and save.last != state["globalStep"]:
        save()
    elapsed = time.perf_counter() - run_start
    summary = dict(globalStep=state["globalStep"], totalSteps=total, bestStep=state["bestStep"],
                   bestMetric=state["bestMetric"], stoppedEarly=stopped_early, trainableParameters=trainable_count,
                   tokensPerSecond=run_tokens / max(1e-9, elapsed), seconds=elapsed)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if interrupted and not finished:
        emit("interrupted", **summary)
        return 130
    emit("done" if finished else "stopped", **summary)
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
