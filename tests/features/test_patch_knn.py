"""Nearest-neighbour patch matching: the bank, the distances and the maps."""

from __future__ import annotations

import torch

from realnet_core.features.patch_knn import PatchKNN, _gaussian_blur, patch_embeddings


def _feats(seed: int, b: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, s, s, generator=g) for c, s in ((4, 16), (6, 8), (8, 4), (5, 2))]


def test_embeddings_concatenate_two_layers_at_the_finer_grid():
    emb = patch_embeddings(_feats(0), layers=(1, 2))
    assert emb.shape == (2, 6 + 8, 8, 8)


def test_training_patches_score_zero_and_a_changed_patch_scores_high():
    train = _feats(0)
    knn = PatchKNN().fit(train)
    assert knn.bank.shape == (2 * 8 * 8, 14)
    assert torch.allclose(knn.patch_scores(train), torch.zeros(2, 8, 8), atol=1e-3)
    test = [f.clone() for f in train]
    test[1][0, :, 3, 5] += 10.0
    scores = knn.patch_scores(test)
    # The 3x3 aggregation spreads the change over the patch's neighbourhood, and no further.
    assert scores[0, 3, 5] > 1.0 and scores[0, 2:5, 4:7].min() > 0.5
    far = scores[0].clone()
    far[2:5, 4:7] = 0
    assert far.max() < 1e-3 and scores[1].max() < 1e-3


def test_chunked_search_finds_the_same_neighbours():
    train, test = _feats(0, b=3), _feats(1)
    full = PatchKNN(chunk=10_000).fit(train).patch_scores(test)
    small = PatchKNN(chunk=7).fit(train).patch_scores(test)
    assert torch.allclose(full, small)


def test_maps_have_the_image_size_and_smoothing_keeps_constants():
    maps = PatchKNN.to_maps(torch.rand(2, 8, 8), 64)
    assert maps.shape == (2, 64, 64)
    flat = torch.full((1, 32, 32), 3.0)
    assert torch.allclose(_gaussian_blur(flat, 2.0), flat)
