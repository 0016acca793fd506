"""Noisy-image classifier: OpenAI checkpoint layout and the classifier-guidance gradient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from realnet_core.diffusion.classifier import create_classifier, make_cond_fn
from realnet_core.diffusion.unet import load_pretrained

FIXTURE = Path(__file__).parent / "fixtures" / "256x256_classifier.json"


@pytest.fixture
def tiny_classifier(perturb):
    def make(num_classes: int = 5, **kw):
        flags = dict(image_size=16, width=32, depth=1, channel_mult=(1, 2), attention_resolutions="8",
                     num_head_channels=32, num_classes=num_classes)
        flags.update(kw)
        return perturb(create_classifier(**flags))

    return make


def test_state_dict_matches_openai_classifier():
    data = json.loads(FIXTURE.read_text())
    expected = [(k, tuple(s)) for k, s in data["state_dict"]]
    with torch.device("meta"):
        model = create_classifier()
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == data["num_parameters"]
    fake = {k: torch.empty(s, device="meta") for k, s in expected}
    model.load_state_dict(fake, strict=True, assign=True)
    # A dataset with fewer classes re-initialises only the output projection.
    with torch.device("meta"):
        small = create_classifier(num_classes=15)
    assert load_pretrained(small, fake) == ["out.2.c_proj.weight", "out.2.c_proj.bias"]


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_forward_gives_logits(pool, tiny_classifier):
    torch.manual_seed(0)
    model = tiny_classifier(pool=pool)
    logits = model(torch.randn(3, 3, 16, 16), torch.tensor([0, 10, 999]))
    assert logits.shape == (3, 5)
    assert torch.isfinite(logits).all()


def test_cond_fn_is_scaled_log_prob_gradient(tiny_classifier):
    torch.manual_seed(0)
    model = tiny_classifier()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([100, 600])
    y = torch.tensor([1, 4])
    grad = make_cond_fn(model, scale=1.0)(x, t, y=y)
    assert grad.shape == x.shape and grad.dtype == torch.float32
    assert torch.count_nonzero(grad) > 0 and not x.requires_grad

    # Against a direct autograd computation, and linear in the scale.
    x_in = x.clone().requires_grad_(True)
    log_p = F.log_softmax(model(x_in, t), dim=-1)[torch.arange(2), y].sum()
    (expected,) = torch.autograd.grad(log_p, x_in)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(make_cond_fn(model, scale=2.5)(x, t, y=y), 2.5 * expected)
    # Works inside no_grad sampling loops, ignores extra model kwargs, and needs labels.
    with torch.no_grad():
        torch.testing.assert_close(make_cond_fn(model)(x, t, y=y, other=1), expected)
    with pytest.raises(ValueError):
        make_cond_fn(model)(x, t)
    # A classifier whose weights ask for no gradient (as generate_sia loads it) guides the same.
    model.requires_grad_(False)
    torch.testing.assert_close(make_cond_fn(model)(x, t, y=y), expected)
