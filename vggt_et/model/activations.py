"""Output activations of the heads (official `head_act.py` semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """sign(y) * (exp(|y|) - 1): the point head's activation."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def activate_head(
    out: torch.Tensor, activation: str, conf_activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C, H, W] → (values [N, H, W, C-1], confidence [N, H, W]); the last channel is confidence."""
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = inverse_log_transform(values)
    elif activation == "relu":
        values = F.relu(values)
    elif activation != "linear":
        raise ValueError(f"unknown head activation {activation!r}")
    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    elif conf_activation != "linear":
        raise ValueError(f"unknown confidence activation {conf_activation!r}")
    return values, conf


def activate_pose(pred: torch.Tensor) -> torch.Tensor:
    """absT_quaR_FoV encoding: translation and quaternion linear, field of view through ReLU."""
    return torch.cat([pred[..., :3], pred[..., 3:7], F.relu(pred[..., 7:])], dim=-1)
