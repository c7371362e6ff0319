"""The device code: the CPU runs the same path the GPU does; only the CUDA kernels themselves need a GPU."""

import pytest
import torch

from bertkit.config import BertConfig
from bertkit.device import default_device, to_device
from bertkit.model import IGNORE_INDEX, BertForPreTraining

CFG = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 2] = ids[:, 2]
    return dict(input_ids=ids, attention_mask=mask, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))


def test_to_device_moves_the_named_tensors():
    b = batch()
    moved = to_device(b, torch.device("cpu"), keys=("input_ids", "attention_mask"))
    assert set(moved) == {"input_ids", "attention_mask"}
    assert torch.equal(moved["input_ids"], b["input_ids"])
    assert default_device("cpu") == torch.device("cpu")


def step_loss_and_grad(device: torch.device, precision: str):
    torch.manual_seed(0)
    model = BertForPreTraining(CFG).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(**to_device(batch(), device))
    out.loss.backward()
    return out.loss.item(), model.bert.embeddings.word.weight.grad.cpu()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_step_on_cpu(precision):
    """The step the GPU runs (unpadded encoder, sparse MLM, autocast), here on the CPU: finite and learning."""
    loss, grad = step_loss_and_grad(torch.device("cpu"), precision)
    assert torch.isfinite(torch.tensor(loss)) and grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the kernels themselves)")
def test_cuda_step_matches_cpu():
    """On a GPU (TF32 matmuls, SDPA's CUDA kernels) the same step gives the CPU's loss and gradient."""
    device = default_device("cuda")
    assert torch.backends.cuda.matmul.allow_tf32
    cpu_loss, cpu_grad = step_loss_and_grad(torch.device("cpu"), "fp32")
    gpu_loss, gpu_grad = step_loss_and_grad(device, "fp32")
    assert abs(cpu_loss - gpu_loss) < 1e-2
    torch.testing.assert_close(gpu_grad, cpu_grad, atol=1e-3, rtol=1e-2)
