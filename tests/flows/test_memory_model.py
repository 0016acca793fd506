"""flows.bench.memory_model: the bytes a training step holds for its backward pass, and the peak of live tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from flows.bench.memory_model import activation_bytes, peak_bytes
from realnet_core.runtime import for_inference


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")

def test_activation_bytes_count_what_autograd_saves_once_and_leave_out_the_parameters():
    x, w = meta(2, 4, 16, 16), meta(8, 4, 3, 3).requires_grad_(True)
    plane = 2 * 8 * 16 * 16 * 4  # one float32 conv output

    # conv saves its input (the weight is excluded); relu saves only its own output, which fn returns.
    relu = activation_bytes(lambda: torch.relu(F.conv2d(x, w, padding=1)), exclude=[w])
    # silu saves its input too: the conv output, which relu let go.
    silu = activation_bytes(lambda: F.silu(F.conv2d(x, w, padding=1)), exclude=[w])

    assert relu == x.nbytes + plane
    assert silu == x.nbytes + 2 * plane
    assert activation_bytes(lambda: torch.relu(F.conv2d(x, w, padding=1))) == relu + w.nbytes


def test_activation_bytes_under_checkpointing_keep_the_block_input_not_its_insides():
    x, w = meta(2, 4, 16, 16), meta(4, 4, 3, 3).requires_grad_(True)
    plane = x.nbytes

    def block(h: torch.Tensor) -> torch.Tensor:
        return F.silu(F.conv2d(F.silu(F.conv2d(h, w, padding=1)), w, padding=1))

    plain = activation_bytes(lambda: block(F.conv2d(x, w, padding=1)), exclude=[w])
    ckpt = activation_bytes(lambda: checkpoint(block, F.conv2d(x, w, padding=1), use_reentrant=False), exclude=[w])

    # x and the first conv's output (the block input) either way, plus the block's output that fn returns;
    # without checkpointing also the three tensors inside the block that its SiLUs and second conv save.
    assert ckpt == 3 * plane
    assert plain == 6 * plane


def test_activation_bytes_of_attention_are_q_k_v_and_the_output_not_the_scores():
    q, k, v = (meta(1, 2, 256, 8).requires_grad_(True) for _ in range(3))

    held = activation_bytes(lambda: F.scaled_dot_product_attention(q, k, v))

    assert held == 4 * q.nbytes  # a 256 x 256 score matrix per head would be 16x q alone


def test_peak_bytes_is_the_most_alive_at_once_not_the_sum_made():
    x = torch.ones(1000)  # 4,000 bytes, made outside: not counted

    def fn() -> torch.Tensor:
        a = x + 1
        b = a * 2  # a and b alive: 8,000
        del a
        c = b + 1  # b and c alive: 8,000 again
        del b
        return c.sum()

    assert peak_bytes(fn) == 8000


def test_autocast_keeps_bf16_copies_of_weights_that_require_grad_and_inference_modules_have_none():
    torch.manual_seed(0)
    net = nn.Sequential(*(nn.Linear(256, 256, bias=False) for _ in range(4)))
    x = torch.randn(2, 256)
    copies = 4 * 256 * 256 * 2  # a bf16 copy of each weight

    def call() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    trainable = peak_bytes(call)
    for_inference(net)
    inference = peak_bytes(call)

    activations = 4 * 2 * 256 * 2  # every bf16 (2, 256) tensor of the call, at most
    assert trainable >= copies  # all four copies alive at once, under no_grad too
    assert inference <= copies // 4 + activations  # one weight's copy at a time
    assert not net.training and not any(p.requires_grad for p in net.parameters())
