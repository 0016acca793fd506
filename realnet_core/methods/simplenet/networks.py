"""The feature adaptor and the discriminator (paper sec. 3.2 and 3.4; sizes and init from the code)."""

from __future__ import annotations

from torch import Tensor, nn


def _xavier(module: nn.Module) -> None:
    # The code initialises every Linear weight Xavier-normal; biases keep PyTorch's default.
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)


class FeatureAdaptor(nn.Module):
    """One fully connected layer that moves the pretrained features towards the target domain.

    The paper describes it without a bias; the authors' code (``Projection``) has one: ``bias`` picks.
    """

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim, bias=bias)
        self.apply(_xavier)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class Discriminator(nn.Module):
    """A 2-layer MLP scoring each adapted feature: Linear, BatchNorm1d, LeakyReLU(0.2), Linear without bias.

    High means normal; the patch anomaly score is its negation.
    """

    def __init__(self, dim: int, hidden: int = 1024) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Linear(hidden, 1, bias=False)
        self.apply(_xavier)

    def forward(self, x: Tensor) -> Tensor:
        """(N, dim) -> (N,) scores."""
        return self.tail(self.body(x)).squeeze(-1)
