"""Load a ``torch.export`` archive (``.pt2``) that :mod:`advkit.models.export_scan` has checked.

``torch.export.load`` rebuilds the :class:`~torch.export.ExportedProgram`; ``.module(
check_guards=False)`` turns it into a ``GraphModule`` without compiling the archive's guard strings.
The result is wrapped in :class:`ExportedModule`, because an exported graph module refuses
``.eval()`` (its training or eval behaviour was fixed when it was exported) and may have been
exported for one fixed batch size, which the wrapper then feeds in chunks of that size.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from advkit.errors import InputContractError

__all__ = ["ExportedModule", "load_exported", "wrap_program"]


class ExportedModule(nn.Module):
    """An exported program's graph module as an ordinary ``nn.Module`` with one tensor input.

    Switching between training and evaluation mode only sets the flag (the graph's behaviour
    was fixed at export);
    ``batch`` is the batch size the graph was exported for when it is static (inputs are then run
    in chunks of that size, the last one padded with zeros), None when the batch is dynamic."""

    def __init__(self, graph: nn.Module, batch: int | None = None):
        super().__init__()
        self.graph = graph
        self.batch = batch
        self.training = False

    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return self.graph(x)
        outs = []
        for part in x.split(self.batch):
            n = part.shape[0]
            if n < self.batch:
                part = torch.cat([part, part.new_zeros((self.batch - n, *part.shape[1:]))])
            outs.append(self.graph(part)[:n])
        return torch.cat(outs)


def load_exported(p: Path) -> ExportedModule:
    """The model in the ``.pt2`` archive ``p``; call only after its scan allowed it."""
    quiet = logging.getLogger("torch.export")
    level = quiet.level
    try:
        quiet.setLevel(logging.ERROR)
        with warnings.catch_warnings(), open(p, "rb") as f:
            warnings.simplefilter("ignore")
            ep = torch.export.load(f)
        return wrap_program(ep, str(p))
    except InputContractError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means a broken archive
        raise InputContractError(f"{p} is not a loadable torch.export archive: {exc}") from exc
    finally:
        quiet.setLevel(level)


def wrap_program(ep: torch.export.ExportedProgram, where: str = "the exported program"):
    """``ep.module(check_guards=False)`` as an :class:`ExportedModule` (batch size detected)."""
    names = ep.graph_signature.user_inputs
    if len(names) != 1:
        raise InputContractError(
            f"{where} has {len(names)} inputs ({', '.join(map(str, names))}); advkit audits "
            "models taking one tensor: export forward(x) with a single input")
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == names[0])
    shape = getattr(node.meta.get("val"), "shape", None)
    if shape is None or len(shape) < 1:
        raise InputContractError(f"{where}: the program's input is not a batched tensor")
    batch = shape[0] if isinstance(shape[0], int) else None
    return ExportedModule(ep.module(check_guards=False), batch)
