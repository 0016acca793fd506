"""UNet: exact guided-diffusion state-dict layout, checkpoint loading, forward pass."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from realnet_core.diffusion.unet import (
    AttentionBlock,
    GroupNorm32,
    ResBlock,
    create_unet,
    default_channel_mult,
    load_pretrained,
)

GD = Path(__file__).parent / "fixtures"
PAPER_FLAGS = dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                   num_head_channels=64, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True)


def reference_layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
    data = json.loads((GD / name).read_text())
    return [(k, tuple(shape)) for k, shape in data["state_dict"]], data["num_parameters"]


def meta_unet(**flags):
    # The real model is ~2.2 GB in float32; the meta device checks the layout for free.
    with torch.device("meta"):
        return create_unet(**flags)


@pytest.mark.parametrize("fixture,num_classes", [("256x256_diffusion.json", 1000),
                                                 ("256x256_diffusion_uncond.json", None)])
def test_state_dict_matches_openai_checkpoint(fixture, num_classes):
    expected, n_params = reference_layout(fixture)
    model = meta_unet(**PAPER_FLAGS, num_classes=num_classes)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected  # same keys, same order, same shapes, no buffers
    assert sum(p.numel() for p in model.parameters()) == n_params
    # A checkpoint with exactly these tensors loads strictly.
    fake = {k: torch.empty(shape, device="meta") for k, shape in expected}
    result = model.load_state_dict(fake, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # load_pretrained accepts it unchanged and re-initialises nothing.
    assert load_pretrained(meta_unet(**PAPER_FLAGS, num_classes=num_classes), fake) == []


def test_default_channel_mult():
    assert default_channel_mult(256) == (1, 1, 2, 2, 4, 4)
    assert default_channel_mult(128) == (1, 1, 2, 3, 4)
    assert default_channel_mult(64) == (1, 2, 3, 4)
    assert default_channel_mult(32) == (1, 2, 2, 2)
    assert default_channel_mult(48, (1, 2)) == (1, 2)
    assert default_channel_mult(48, "1,2,4") == (1, 2, 4)
    with pytest.raises(ValueError):
        default_channel_mult(48)


def test_forward_shape_and_zero_init():
    torch.manual_seed(0)
    model = create_unet(image_size=32, num_channels=32, num_res_blocks=1, attention_resolutions="16,8",
                        num_head_channels=16)
    x = torch.randn(2, 3, 32, 32)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == (2, 6, 32, 32)
    assert torch.count_nonzero(out) == 0  # zero-initialised last conv, as upstream
    assert create_unet(image_size=32, num_channels=32, num_res_blocks=1, learn_sigma=False,
                       attention_resolutions="8").out[-1].out_channels == 3


def test_class_conditional_forward_and_label_dependence(tiny_unet, perturb):
    torch.manual_seed(0)
    model = perturb(tiny_unet(num_classes=3))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([5, 5])
    a = model(x, t, y=torch.tensor([0, 0]))
    b = model(x, t, y=torch.tensor([1, 2]))
    assert a.shape == (2, 6, 16, 16)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        model(x, t)


def test_attention_matches_upstream_legacy_layout():
    """SDPA with the per-head [q|k|v] split must equal upstream's QKVAttentionLegacy einsum."""
    torch.manual_seed(0)
    block = AttentionBlock(64, num_head_channels=16)
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.randn(2, 64, 4, 4)
    got = block(x)

    heads, ch = 4, 16
    flat = x.reshape(2, 64, -1)
    qkv = block.qkv(block.norm(flat)).reshape(2 * heads, 3 * ch, -1)
    q, k, v = qkv.split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    h = torch.einsum("bts,bcs->bct", w, v).reshape(2, 64, -1)
    expected = (flat + block.proj_out(h)).reshape(2, 64, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_and_checkpointing(tiny_unet, perturb):
    torch.manual_seed(0)
    model = perturb(tiny_unet())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.05)

    ckpt = tiny_unet(use_checkpoint=True)
    ckpt.load_state_dict(model.state_dict())
    ckpt.train()
    model.train()
    model(x, t).square().mean().backward()
    ckpt(x, t).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_scale_shift_norm_is_norm_times_one_plus_scale_plus_shift(perturb):
    # Upstream's FiLM conditioning, out_norm(h) * (1 + scale) + shift, written by hand against the block.
    torch.manual_seed(0)
    block = perturb(ResBlock(32, 16, use_scale_shift_norm=True)).eval()
    x, emb = torch.randn(2, 32, 8, 8), torch.randn(2, 16)
    norm, rest = block.out_layers[0], block.out_layers[1:]
    h = block.in_layers(x)
    scale, shift = block.emb_layers(emb)[..., None, None].chunk(2, dim=1)
    expected = x + rest(norm(h) * (1 + scale) + shift)
    torch.testing.assert_close(block(x, emb), expected, rtol=1e-5, atol=1e-5)


def _group_norm_pair(seed: int = 0) -> tuple[GroupNorm32, torch.Tensor]:
    torch.manual_seed(seed)
    gn = GroupNorm32(32, 256)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    # Off-centre activations: a bf16 accumulator would lose the variance against the mean.
    return gn, (torch.randn(2, 256, 8, 8) * 3 + 5).bfloat16()


def test_group_norm_of_bf16_activations_matches_the_float32_round_trip():
    gn, x = _group_norm_pair()
    x32 = x.float().requires_grad_(True)
    ref = F.group_norm(x32, 32, gn.weight, gn.bias, gn.eps)
    ref.square().sum().backward()
    ref_grad, ref_wgrad = x32.grad, gn.weight.grad.clone()
    gn.weight.grad = None

    x16 = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gn(x16)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16 and gn.weight.grad.dtype == torch.float32
    # Two bf16 roundings apart (gamma and the output), no more.
    torch.testing.assert_close(out.float(), ref.detach(), rtol=2 ** -7, atol=2 ** -7)
    torch.testing.assert_close(x16.grad.float(), ref_grad, rtol=2 ** -6, atol=0.05)
    torch.testing.assert_close(gn.weight.grad, ref_wgrad, rtol=2 ** -6, atol=0.0)


def test_group_norm_under_autocast_makes_no_float32_copy_of_the_activations():
    gn, x = _group_norm_pair()
    made: list[tuple[tuple[int, ...], torch.dtype]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            made.extend((tuple(t.shape), t.dtype) for t in (out if isinstance(out, tuple) else (out,))
                        if isinstance(t, torch.Tensor))
            return out

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), Record():
        gn(x)
    activations = [dtype for shape, dtype in made if shape == tuple(x.shape)]
    assert activations == [torch.bfloat16]  # one output, and nothing in float32 on the way
    # float32 activations keep the plain float32 pass.
    assert gn(x.float()).dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# load_pretrained
# ----------------------------------------------------------------------------------------------


def test_load_pretrained_copies_weights_and_reinits_label_emb(tiny_unet):
    torch.manual_seed(0)
    source = tiny_unet(num_classes=1000)
    state = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    target = tiny_unet(num_classes=15)
    reinit = load_pretrained(target, state)
    assert reinit == ["label_emb.weight"]
    assert target.label_emb.weight.shape == (15, 128)
    for k, v in target.state_dict().items():
        if k != "label_emb.weight":
            torch.testing.assert_close(v, state[k])
    # Same class count: everything is copied, nothing re-initialised.
    same = tiny_unet(num_classes=1000)
    assert load_pretrained(same, state) == []
    torch.testing.assert_close(same.label_emb.weight, state["label_emb.weight"])


def test_load_pretrained_from_unconditional_checkpoint_into_conditional_model(tiny_unet):
    uncond = {k: torch.randn_like(v) for k, v in tiny_unet().state_dict().items()}
    assert load_pretrained(tiny_unet(num_classes=4), uncond) == ["label_emb.weight"]


def test_load_pretrained_on_meta_paper_model_with_new_class_count():
    state = {k: torch.empty(shape, device="meta")
             for k, shape in reference_layout("256x256_diffusion.json")[0]}
    assert load_pretrained(meta_unet(**PAPER_FLAGS, num_classes=15), state) == ["label_emb.weight"]


def test_load_pretrained_rejects_mismatches_by_name(tiny_unet):
    state = dict(tiny_unet().state_dict())
    with pytest.raises(ValueError, match="label_emb.weight"):  # conditional checkpoint, unconditional model
        load_pretrained(tiny_unet(), {**state, "label_emb.weight": torch.zeros(10, 128)})
    bad = dict(state)
    bad["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(ValueError, match=r"out\.2\.weight"):
        load_pretrained(tiny_unet(), bad)
    missing = dict(state)
    del missing["time_embed.0.bias"]
    with pytest.raises(ValueError, match=r"missing: time_embed\.0\.bias"):
        load_pretrained(tiny_unet(), missing)


def test_set_grad_checkpoint_reaches_every_residual_and_attention_block(tiny_unet):
    from realnet_core.diffusion.unet import set_grad_checkpoint

    model = tiny_unet()
    blocks = [m for m in model.modules() if hasattr(m, "use_checkpoint")]
    assert len(blocks) >= 5 and not any(b.use_checkpoint for b in blocks)
    set_grad_checkpoint(model)
    assert all(b.use_checkpoint for b in blocks)
    set_grad_checkpoint(model, False)
    assert not any(b.use_checkpoint for b in blocks)
