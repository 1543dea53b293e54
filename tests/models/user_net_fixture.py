"""A user's own PyTorch classifier, as it would sit beside an audit spec (``user_net.py``).

The tests copy this file into a temporary folder as ``user_net.py`` and name the class in a spec
as ``class: "user_net:Net"``: advkit imports it from the spec's folder.
"""

import torch
from torch import nn


class Net(nn.Module):
    """A small MLP for 8x8 digits: flatten, one hidden layer, ten logits."""

    def __init__(self, hidden: int = 32, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class NotAModule:
    """Something that is not an nn.Module (the loader must refuse it)."""
