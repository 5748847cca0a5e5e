"""The torch engine's loss pieces: the host-computed loss positions give exactly the loss and gradients of a boolean
mask over the hidden states (what the engine did before, and what the tfjs trainer's masks mean), and a batch is
padded to its own longest example, not to maxSeqLength."""
import numpy as np
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from finetune_finance_py.engine.data import pad_batch
from finetune_finance_py.engine.run import _loss_module, _tensors


def _model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    return LlamaForCausalLM(config).float()


def _examples():
    rng = np.random.default_rng(3)
    out = []
    for n, answer_from in [(9, 4), (5, 2), (7, 7)]:  # the last has no answer token
        ids = rng.integers(3, 64, size=n).astype(np.int64)
        labels = (np.arange(n) >= answer_from).astype(np.int64)
        out.append((ids, labels))
    return out


def test_padding_is_to_the_batch_maximum():
    batch = pad_batch(_examples(), 2)
    assert batch.input_ids.shape == (3, 9)
    assert batch.tokens == 21
    assert batch.loss_tokens == 5 + 3  # labels[1:] of each example


def test_index_loss_equals_boolean_mask_loss_bit_for_bit():
    model = _model()
    batch = pad_batch(_examples(), 2)
    ids, pos, mask, index, targets = _tensors(torch, batch, torch.device("cpu"))
    assert index.tolist() == np.flatnonzero(batch.loss_mask.reshape(-1)).tolist()
    loss = _loss_module(torch, model)(ids, pos, mask, index, targets)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    hidden = model.model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
    bool_mask = torch.from_numpy(batch.loss_mask)
    expected = F.cross_entropy(model.lm_head(hidden[bool_mask]).float(), torch.from_numpy(batch.targets)[bool_mask],
                               reduction="sum")
    expected.backward()
    assert loss.item() == expected.item()
    for g, p in zip(grads, model.parameters()):
        assert torch.equal(g, p.grad)


def test_no_answer_token_keeps_the_graph_with_a_zero_loss():
    model = _model()
    batch = pad_batch(_examples()[2:], 2)
    assert batch.loss_tokens == 0
    loss = _loss_module(torch, model)(*_tensors(torch, batch, torch.device("cpu")))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in model.model.layers.parameters())
