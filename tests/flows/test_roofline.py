"""flows.bench.roofline: FLOPs and bytes per op on the meta device, and the bounds built from them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flows.bench.roofline import op_costs, roofline


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def test_a_convolution_is_charged_its_flops_and_the_bytes_it_reads_and_writes():
    x, w = meta(2, 4, 16, 16), meta(8, 4, 3, 3)

    ops = op_costs(lambda: F.conv2d(x, w, padding=1))

    assert ops["op"].tolist() == ["aten.convolution"]
    row = ops.iloc[0]
    assert row["flops"] == 2 * (2 * 16 * 16) * 8 * (4 * 3 * 3)  # 2 per multiply-add, per output element
    assert row["bytes_read"] == (2 * 4 * 16 * 16 + 8 * 4 * 3 * 3) * 4  # float32 input and weight
    assert row["bytes_written"] == 2 * 8 * 16 * 16 * 4


def test_views_move_no_bytes_and_are_not_charged():
    x = meta(4, 6)

    ops = op_costs(lambda: (x.view(-1), x.t(), x[1:], x.reshape(2, 12)))

    assert ops.empty


def test_attention_is_charged_as_one_fused_kernel():
    q, k, v = meta(1, 2, 64, 8), meta(1, 2, 32, 8), meta(1, 2, 32, 8)

    ops = op_costs(lambda: F.scaled_dot_product_attention(q, k, v))

    assert ops["op"].tolist() == ["aten._scaled_dot_product_flash_attention"]  # no softmax, no score matrix
    row = ops.iloc[0]
    assert row["flops"] == 4 * (2 * 64) * 32 * 8
    assert row["bytes_read"] == (q.numel() + k.numel() + v.numel()) * 4 and row["bytes_written"] == q.numel() * 4


def test_each_op_costs_its_slower_roof_and_the_ceiling_keeps_only_flop_ops():
    x, w = meta(1, 1, 8, 8), meta(1, 1, 1, 1)

    ops = op_costs(lambda: torch.relu(F.conv2d(x, w)))
    bound = roofline(ops, peak_flops=64.0, bytes_per_s=256.0)

    # conv: 2 * 64 FLOP -> 2 s of compute, (256 + 4 + 256) bytes -> 2.02 s of memory: memory-bound.
    # relu: no FLOPs, 512 bytes -> 2 s. Eager pays both; the ceiling fuses the relu away.
    assert bound["eager_s"] == pytest.approx(516 / 256 + 512 / 256)
    assert bound["ceiling_s"] == pytest.approx(516 / 256)
    assert bound["memory_bound_share_eager"] == pytest.approx((512 / 256) / bound["eager_s"])
    assert bound["flops"] == 128 and bound["bytes"] == 516 + 512


def test_an_index_select_reads_only_what_it_gathers():
    x, idx = meta(1, 64, 4, 4), torch.zeros(3, dtype=torch.long, device="meta")

    ops = op_costs(lambda: x.index_select(1, idx))

    assert ops.iloc[0]["bytes_read"] == ops.iloc[0]["bytes_written"] == 3 * 16 * 4

