"""Tests for Eq. 3 blending and batch synthesis."""

import pytest
import torch

from realnet_core.synthesis.blend import _first_hits, blend, synthesize
from realnet_core.synthesis.perlin import draw_perlin


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 8, s: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.rand(b, 3, s, s, generator=g), torch.rand(b, 3, s, s, generator=g)


def test_blend_matches_eq3():
    images, sources = _batch(4)
    masks = (torch.rand(4, 1, 32, 32, generator=_gen(1)) > 0.5).float()
    delta = torch.tensor([0.5, 0.7, 0.9, 1.0])
    out = blend(images, sources, masks, delta)
    d = delta.view(4, 1, 1, 1)
    expected = (1 - masks) * images + masks * (d * sources + (1 - d) * images)
    torch.testing.assert_close(out, expected)
    inside = masks.expand_as(images).bool()
    assert torch.equal(out[~inside], images[~inside])
    # delta = 1: the masked pixels are the source's.
    full = blend(images, sources, masks, 1.0)
    torch.testing.assert_close(full[inside], sources[inside])


def test_synthesize_changes_only_inside_fg_times_perlin():
    images, sources = _batch(16, 48)
    fg = torch.zeros(16, 1, 48, 48)
    fg[:, :, 8:40, 8:40] = 1
    aug, masks = synthesize(images, sources, fg, generator=_gen(2), normal_fraction=0.0)
    assert aug.shape == images.shape and masks.shape == (16, 1, 48, 48)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert bool((masks <= fg).all())
    outside = (masks == 0).expand_as(images)
    assert torch.equal(aug[outside], images[outside])  # bit-identical
    changed = (aug != images).any(dim=1, keepdim=True)
    assert torch.equal(changed, masks.bool())  # the mask is exactly where pixels changed
    assert bool((masks.flatten(1).amax(1) > 0).all())  # anomalous samples have non-empty masks


def test_half_normal_statistically():
    images, sources = _batch(200, 16)
    aug, masks = synthesize(images, sources, None, generator=_gen(3))
    normal = masks.flatten(1).amax(1) == 0
    assert 0.4 <= normal.float().mean() <= 0.6
    assert torch.equal(aug[normal], images[normal])


def test_delta_range_respected():
    images = torch.zeros(32, 3, 16, 16)
    sources = torch.ones(32, 3, 16, 16)
    aug, masks = synthesize(
        images, sources, None, generator=_gen(4), normal_fraction=0.0, delta_range=(0.6, 0.8)
    )
    vals = aug[masks.expand_as(aug).bool()]
    assert vals.min() >= 0.6 - 1e-6 and vals.max() <= 0.8 + 1e-6


def test_empty_foreground_gives_normal_samples():
    images, sources = _batch(6, 16)
    aug, masks = synthesize(
        images, sources, torch.zeros(6, 1, 16, 16), generator=_gen(5), normal_fraction=0.0
    )
    assert masks.sum() == 0
    assert torch.equal(aug, images)


def test_reproducible():
    images, sources = _batch(8, 32)
    a = synthesize(images, sources, None, generator=_gen(6))
    b = synthesize(images, sources, None, generator=_gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _small_foreground(b: int, s: int) -> torch.Tensor:
    # A few pixels of foreground per image: most first Perlin draws miss it and must be redrawn.
    fg = torch.zeros(b, 1, s, s)
    fg[:, :, 3:6, 20:23] = 1
    return fg


def test_randomness_taken_does_not_depend_on_what_the_masks_hit():
    # No redraw decision may reach the generator: that is what lets a GPU run without waiting for
    # the masks to come back to the host at every training step.
    images, sources = _batch(16, 32)
    after = []
    for fg in (None, _small_foreground(16, 32), torch.zeros(16, 1, 32, 32)):
        gen = _gen(8)
        synthesize(images, sources, fg, generator=gen, normal_fraction=0.3)
        after.append(gen.get_state())
    assert torch.equal(after[0], after[1]) and torch.equal(after[0], after[2])


def test_lazy_and_batched_redraws_pick_the_same_masks():
    b, s, rounds = 24, 32, 6
    fg = _small_foreground(b, s)
    candidates = draw_perlin(rounds * b, s, s, generator=_gen(9))
    anomalous = torch.arange(b) % 4 != 0
    lazy = _first_hits(candidates, fg, anomalous, 0.5, b, lazy=True)
    batched = _first_hits(candidates, fg, anomalous, 0.5, b, lazy=False)
    assert torch.equal(lazy, batched)
    first_only = _first_hits(candidates.rows(slice(0, b)), fg, anomalous, 0.5, b, lazy=True)
    hits = lazy.flatten(1).amax(1) > 0
    # The redraws mattered: more samples hit the foreground than with the first draw alone.
    assert hits.sum() > (first_only.flatten(1).amax(1) > 0).sum()
    assert not bool(hits[~anomalous].any())  # normal samples stay normal


def test_perlin_kwargs_pass_through():
    images, sources = _batch(8, 32)
    _, coarse = synthesize(images, sources, None, generator=_gen(7), normal_fraction=0.0, threshold=0.1)
    _, fine = synthesize(images, sources, None, generator=_gen(7), normal_fraction=0.0, threshold=0.6)
    assert coarse.mean() > fine.mean()


def test_shape_errors():
    images, sources = _batch(2, 16)
    with pytest.raises(ValueError):
        synthesize(images, sources[:, :, :8], None, generator=_gen())
    with pytest.raises(ValueError):
        synthesize(images, sources, torch.ones(2, 1, 8, 8), generator=_gen())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_synthesize_on_cuda_never_waits_for_the_gpu():
    images, sources = (t.cuda() for t in _batch(16, 64))
    fg = _small_foreground(16, 64).cuda()
    _ = synthesize(images, sources, fg, generator=_gen(10))  # first call: pinned-memory pools
    torch.cuda.set_sync_debug_mode("error")
    try:
        _, masks = synthesize(images, sources, fg, generator=_gen(10))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _, cpu_masks = synthesize(images.cpu(), sources.cpu(), fg.cpu(), generator=_gen(10))
    # Same random draws; float differences in the Perlin fields may flip a few threshold pixels.
    assert (masks.cpu() != cpu_masks).float().mean() < 1e-3
