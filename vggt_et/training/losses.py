"""VGGT's training objective, after the official `training/loss.py` (MultitaskLoss) and the ground-truth
normalisation of `training/train_utils/normalization.py`, written here from their definitions.

Shapes: B samples of S views at H x W. Predictions are the model's training-mode dict (`pose_enc_list`,
`depth` [B, S, H, W, 1], `depth_conf` [B, S, H, W], `world_points` [B, S, H, W, 3], `world_points_conf`);
the batch holds `images`, `depth` [B, S, H, W], `extrinsics` [B, S, 3, 4], `intrinsics` [B, S, 3, 3],
`world_points` and `valid` [B, S, H, W] (bool), already normalised by `normalize_scene`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vggt_et.outputs.geometry import closed_form_inverse_se3, extri_intri_to_pose_encoding

# A frame (camera loss) or a batch (depth and point losses) needs more valid pixels than this to count.
MIN_VALID_PIXELS = 100


@dataclass(frozen=True)
class LossConfig:
    """Weights and options; the defaults are the official configuration's (camera 5, depth 1, point 1)."""

    camera_weight: float = 5.0
    depth_weight: float = 1.0
    point_weight: float = 1.0
    gamma_stages: float = 0.6  # later camera-head iterations weigh more: gamma ** (stages - 1 - i)
    weight_trans: float = 1.0
    weight_rot: float = 1.0
    weight_focal: float = 0.5
    gamma: float = 1.0  # confidence-weighted error's weight
    alpha: float = 0.2  # weight of -log(confidence)
    valid_range: float = 0.98  # quantile above which per-pixel losses are dropped (<= 0: keep all)
    depth_gradient: str | None = "grad"  # "grad", "normal" or None
    point_gradient: str | None = "normal"


def finite(x: torch.Tensor) -> torch.Tensor:
    """NaN and infinity become 0 (the official code does the same, and logs it)."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def normalize_scene(
    extrinsics: torch.Tensor, depth: torch.Tensor, world_points: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground truth in the first camera's frame, scaled so the valid points' mean distance to it is 1.

    extrinsics [B, S, 3, 4] camera-from-world, depth [B, S, H, W], world_points [B, S, H, W, 3], valid
    [B, S, H, W] -> (extrinsics, depth, world_points) normalised, per sample (VGGT predicts in that frame and
    at that scale: first camera at the identity, scene of unit mean distance).
    """
    first = extrinsics[:, 0]  # [B, 3, 4]
    rot, trans = first[:, :3, :3], first[:, :3, 3]
    points = torch.einsum("bij,bshwj->bshwi", rot, world_points) + trans[:, None, None, None, :]
    mask = valid.to(points.dtype)
    mean_dist = (points.norm(dim=-1) * mask).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) + 1e-3)
    scale = mean_dist.clamp(1e-6, 1e6)
    # New camera-from-world = old camera-from-world composed with world-from-first-camera.
    world_from_first = closed_form_inverse_se3(first)  # [B, 3, 4]
    rot_new = extrinsics[..., :3] @ world_from_first[:, None, :, :3]
    trans_new = (extrinsics[..., :3] @ world_from_first[:, None, :, 3:]).squeeze(-1) + extrinsics[..., 3]
    extrinsics = torch.cat([rot_new, (trans_new / scale[:, None, None])[..., None]], dim=-1)
    points = points * mask[..., None] / scale[:, None, None, None, None]
    return extrinsics, depth / scale[:, None, None, None], points


def camera_loss(
    pose_enc_list: list[torch.Tensor], batch: dict[str, torch.Tensor], config: LossConfig
) -> dict[str, torch.Tensor]:
    """L1 between each camera-head iteration's encoding and the ground truth's, later iterations weighted more.

    Translation (clamped at 100 per element), quaternion and field of view separately, each a mean over
    elements; only samples whose first frame has enough valid pixels count.
    """
    height, width = batch["images"].shape[-2:]
    target = extri_intri_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], (height, width))
    usable = batch["valid"][:, 0].sum(dim=(-1, -2)) > MIN_VALID_PIXELS  # [B]
    stages = len(pose_enc_list)
    parts = {"loss_T": 0.0, "loss_R": 0.0, "loss_FL": 0.0}
    for index, pred in enumerate(pose_enc_list):
        weight = config.gamma_stages ** (stages - index - 1)
        if not usable.any():
            zero = (pred * 0).mean()
            errors = (zero, zero, zero)
        else:
            diff = finite((pred[usable] - target[usable].to(pred.dtype)).abs())
            errors = (diff[..., :3].clamp(max=100).mean(), diff[..., 3:7].mean(), diff[..., 7:].mean())
        for key, error in zip(parts, errors, strict=True):
            parts[key] = parts[key] + weight * error
    parts = {key: value / stages for key, value in parts.items()}
    parts["loss_camera"] = (
        config.weight_trans * parts["loss_T"]
        + config.weight_rot * parts["loss_R"]
        + config.weight_focal * parts["loss_FL"]
    )
    return parts


def drop_above_quantile(
    losses: torch.Tensor, quantile: float, min_elements: int = 1000, hard_max: float = 100.0
) -> torch.Tensor:
    """Per-pixel losses, clamped at `hard_max`, without those at or above their `quantile` (outliers).

    Left as they are when there are `min_elements` or fewer, or when fewer would remain.
    """
    if losses.numel() <= min_elements:
        return losses
    losses = losses.clamp(max=hard_max)
    flat = losses.detach().reshape(-1)
    k = round(quantile * (flat.numel() - 1)) + 1
    threshold = min(float(flat.kthvalue(k).values), hard_max)
    keep = losses < threshold
    return losses[keep] if keep.sum() > min_elements else losses


def confidence_regression(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    conf: torch.Tensor,
    config: LossConfig,
    gradient: str | None,
) -> dict[str, torch.Tensor]:
    """pred, target [B, S, H, W, C], mask and conf [B, S, H, W] -> {"conf", "reg", "grad"}.

    reg: the Euclidean distance |pred - target| per valid pixel (not squared); conf: gamma * reg * conf -
    alpha * log(conf) (aleatoric: a confident pixel pays its error in full, an unsure one pays the log
    instead); grad: the multi-scale gradient ("grad") or normal ("normal") term, without confidence.
    Both means are taken after dropping the pixels above `config.valid_range`'s quantile.
    """
    b, s, h, w, c = pred.shape
    reg = finite(torch.linalg.vector_norm(target[mask] - pred[mask], dim=-1))
    conf_term = finite(config.gamma * reg * conf[mask] - config.alpha * torch.log(conf[mask]))
    if gradient is None:
        grad = (pred * 0).mean()
    else:
        term, scales = {"grad": (gradient_term, 4), "normal": (normal_term, 3)}[gradient]
        grad = multi_scale(
            term,
            pred.reshape(b * s, h, w, c),
            target.reshape(b * s, h, w, c),
            mask.reshape(b * s, h, w),
            scales,
        )
    out = {}
    for key, losses in (("conf", conf_term), ("reg", reg)):
        if losses.numel() == 0:
            out[key] = (pred * 0).mean()
            continue
        if config.valid_range > 0:
            losses = drop_above_quantile(losses, config.valid_range)
        out[key] = finite(losses).mean()
    out["grad"] = grad
    return out


def multi_scale(
    term, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scales: int
) -> torch.Tensor:
    """Mean of `term` on the maps subsampled by 1, 2, 4, ... (every 2^k-th pixel), `scales` of them."""
    total = sum(
        term(pred[:, ::step, ::step], target[:, ::step, ::step], mask[:, ::step, ::step])
        for step in (2**k for k in range(scales))
    )
    return total / scales


def gradient_term(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 of the horizontal and vertical differences of the error map, over pixel pairs both valid,
    each clamped at 100; the sum is divided by the number of valid values (pixels x channels).

    pred, target [N, H, W, C], mask [N, H, W]. An error that is constant over the image costs nothing: the
    term asks for the right shape (edges, slopes), whatever the offset.
    """
    m = mask[..., None].to(pred.dtype).expand_as(pred)
    diff = (pred - target) * m
    grad_x = ((diff[:, :, 1:] - diff[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]).clamp(max=100)
    grad_y = ((diff[:, 1:] - diff[:, :-1]).abs() * m[:, 1:] * m[:, :-1]).clamp(max=100)
    count = m.sum()
    if count == 0:
        return (pred * 0).sum()
    return (grad_x.sum() + grad_y.sum()) / count


def point_map_normals(
    points: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Four normals per pixel of a point map [N, H, W, 3], from the cross products of the vectors to its
    neighbours taken in turn (up x left, left x down, down x right, right x up) -> ([4, N, H, W, 3] unit
    normals, [4, N, H, W] valid where the pixel and both neighbours are). Pixels outside are invalid."""
    pts = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
    m = F.pad(mask, (1, 1, 1, 1))
    center, mc = pts[:, 1:-1, 1:-1], m[:, 1:-1, 1:-1]
    neighbours = [
        (pts[:, :-2, 1:-1], m[:, :-2, 1:-1]),
        (pts[:, 1:-1, :-2], m[:, 1:-1, :-2]),
        (pts[:, 2:, 1:-1], m[:, 2:, 1:-1]),
        (pts[:, 1:-1, 2:], m[:, 1:-1, 2:]),
    ]  # up, left, down, right
    normals, valids = [], []
    for (first, m_first), (second, m_second) in zip(neighbours, neighbours[1:] + neighbours[:1], strict=True):
        normals.append(torch.linalg.cross(first - center, second - center, dim=-1))
        valids.append(m_first & mc & m_second)
    return F.normalize(torch.stack(normals), dim=-1, eps=eps), torch.stack(valids)


def normal_term(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Mean of 1 - cos(angle) between the predicted and true surface normals where both are defined
    (0 when fewer than 10 are): point maps [N, H, W, 3], mask [N, H, W] bool."""
    pred_n, pred_ok = point_map_normals(pred, mask, eps)
    true_n, true_ok = point_map_normals(target, mask, eps)
    both = pred_ok & true_ok
    if both.sum() < 10:
        return (pred * 0).sum()
    cos = (pred_n[both] * true_n[both]).sum(-1).clamp(-1 + eps, 1 - eps)
    return finite(1 - cos).mean()


def vggt_loss(
    predictions: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], config: LossConfig = LossConfig()
) -> dict[str, torch.Tensor]:
    """The weighted sum ("objective") and every part: camera (T, R, FL), depth and point (conf, reg, grad).

    Each head's part counts only when the model has that head; depth and point parts are zero (with a
    gradient) when the batch has too few valid pixels.
    """
    out: dict[str, torch.Tensor] = {}
    total = 0.0
    if "pose_enc_list" in predictions:
        out.update(camera_loss(predictions["pose_enc_list"], batch, config))
        total = total + config.camera_weight * out["loss_camera"]
    heads = (
        ("depth", "depth", "depth_conf", batch["depth"][..., None], config.depth_weight, config.depth_gradient),
        ("point", "world_points", "world_points_conf", batch["world_points"], config.point_weight,
         config.point_gradient),
    )  # fmt: skip
    for name, key, conf_key, target, weight, gradient in heads:
        if key not in predictions:
            continue
        pred = predictions[key]
        if batch["valid"].sum() < MIN_VALID_PIXELS:
            parts = dict.fromkeys(("conf", "reg", "grad"), (pred * 0).mean())
        else:
            parts = confidence_regression(
                pred, finite(target).to(pred.dtype), batch["valid"], predictions[conf_key], config, gradient
            )
        for part, value in parts.items():
            out[f"loss_{part}_{name}"] = value
        total = total + weight * (parts["conf"] + parts["reg"] + parts["grad"])
    out["objective"] = total
    return out
