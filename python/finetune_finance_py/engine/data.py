"""The handover's token files (numpy .npy, memory-mapped: nothing is copied until a batch is built) and the
collation of Collate.ts, line for line: right padding with the pad id, or greedy first-fit packing; the target of
position i is token i+1 of the same example, a loss target when that token is an answer token.
"""
import os

import numpy as np


class Examples:
    """Tokenized examples stored flat: ids and answer labels, with `offsets[i]:offsets[i+1]` the i-th example."""

    def __init__(self, folder: str, prefix: str):
        self.ids = np.load(os.path.join(folder, f"{prefix}_ids.npy"), mmap_mode="r")
        self.labels = np.load(os.path.join(folder, f"{prefix}_labels.npy"), mmap_mode="r")
        self.offsets = np.load(os.path.join(folder, f"{prefix}_offsets.npy"), mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, i: int):
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], self.labels[a:b]

    def loss_tokens(self, i: int) -> int:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        # labels[1:] of the example: the first token is never a target
        return int(np.count_nonzero(self.labels[a + 1:b]))

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


class Plan:
    """The run's steps as Trainer.planSteps made them: step -> micro-batches -> example indices."""

    def __init__(self, folder: str):
        self.examples = np.load(os.path.join(folder, "plan_examples.npy"), mmap_mode="r")
        self.micro_offsets = np.load(os.path.join(folder, "plan_micro_offsets.npy"), mmap_mode="r")
        self.step_offsets = np.load(os.path.join(folder, "plan_step_offsets.npy"), mmap_mode="r")
        self.epoch = np.load(os.path.join(folder, "plan_epoch.npy"), mmap_mode="r")

    def __len__(self) -> int:
        return len(self.step_offsets) - 1

    def micro_batches(self, step: int):
        out = []
        for m in range(int(self.step_offsets[step]), int(self.step_offsets[step + 1])):
            a, b = int(self.micro_offsets[m]), int(self.micro_offsets[m + 1])
            out.append([int(i) for i in self.examples[a:b]])
        return out


class Batch:
    def __init__(self, input_ids, position_ids, segment_ids, loss_mask, targets, tokens, loss_tokens, packed):
        self.input_ids = input_ids
        self.position_ids = position_ids
        self.segment_ids = segment_ids
        self.loss_mask = loss_mask
        self.targets = targets
        self.tokens = tokens
        self.loss_tokens = loss_tokens
        self.packed = packed


def _build(rows, pad_id: int, packed: bool) -> Batch:
    length = max([1] + [sum(len(ids) for ids, _ in segs) for segs in rows])
    shape = (len(rows), length)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    position_ids = np.tile(np.arange(length, dtype=np.int64), (len(rows), 1))
    segment_ids = np.zeros(shape, dtype=np.int64)
    loss_mask = np.zeros(shape, dtype=bool)
    targets = np.zeros(shape, dtype=np.int64)
    tokens = 0
    for r, segs in enumerate(rows):
        pos = 0
        for s, (ids, labels) in enumerate(segs):
            n = len(ids)
            input_ids[r, pos:pos + n] = ids
            segment_ids[r, pos:pos + n] = s + 1
            if packed:
                position_ids[r, pos:pos + n] = np.arange(n)
            if n > 1:
                targets[r, pos:pos + n - 1] = ids[1:]
                loss_mask[r, pos:pos + n - 1] = labels[1:] != 0
            tokens += n
            pos += n
    return Batch(input_ids, position_ids, segment_ids, loss_mask, targets, tokens, int(loss_mask.sum()), packed)


def pad_batch(examples, pad_id: int) -> Batch:
    return _build([[e] for e in examples], pad_id, False)


def pack_batch(examples, pad_id: int, max_length: int) -> Batch:
    rows, used = [], []
    for ex in examples:
        n = len(ex[0])
        r = next((k for k, u in enumerate(used) if u + n <= max_length), -1)
        if r >= 0:
            rows[r].append(ex)
            used[r] += n
        else:
            rows.append([ex])
            used.append(n)
    return _build(rows, pad_id, True)


def collate(data: Examples, indices, pad_id: int, packing: bool, max_length: int) -> Batch:
    examples = [data.example(i) for i in indices]
    return pack_batch(examples, pad_id, max_length) if packing else pad_batch(examples, pad_id)
