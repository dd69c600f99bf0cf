"""2-D RoPE and position-embedding interpolation against hand-computed cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vggt_et.model.aggregator import Aggregator, first_and_rest_tokens
from vggt_et.model.dinov2 import DinoVisionTransformer
from vggt_et.model.presets import get_preset
from vggt_et.model.rope import RotaryPositionEmbedding2D, patch_positions


def _rotate_by_hand(x: list[float], pos: int, base: float = 100.0) -> list[float]:
    """Rotate-half RoPE of one 1-D half written out scalar by scalar (d = len(x))."""
    d = len(x)
    half = d // 2
    out = []
    for j in range(d):
        i = j % half
        angle = pos * base ** (-2 * i / d)
        partner = -x[j + half] if j < half else x[j - half]
        out.append(x[j] * math.cos(angle) + partner * math.sin(angle))
    return out


def test_rope_matches_hand_computation() -> None:
    rope = RotaryPositionEmbedding2D(frequency=100.0)
    torch.manual_seed(0)
    tokens = torch.randn(1, 1, 2, 8)  # head dim 8: 4 features rotated by row, 4 by column
    positions = torch.tensor([[[3, 5], [0, 2]]])
    out = rope(tokens, positions, table_length=7)
    for n in range(2):
        row, col = positions[0, n].tolist()
        expected = _rotate_by_hand(tokens[0, 0, n, :4].tolist(), row) + _rotate_by_hand(
            tokens[0, 0, n, 4:].tolist(), col
        )
        torch.testing.assert_close(out[0, 0, n], torch.tensor(expected), atol=1e-6, rtol=1e-6)


def test_rope_static_table_is_bit_identical_to_data_sized_table() -> None:
    rope = RotaryPositionEmbedding2D()
    tokens = torch.randn(2, 4, 30, 16)
    positions = patch_positions(2, 5, 6) + 1
    data_sized = rope(tokens, positions)  # official: int(max) + 1
    assert torch.equal(rope(tokens, positions, table_length=50), data_sized)


def test_rope_keeps_position_zero_and_depends_on_relative_offset() -> None:
    rope = RotaryPositionEmbedding2D()
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    zero = torch.zeros(1, 1, 2, dtype=torch.long)
    assert torch.allclose(rope(q, zero, 4), q)  # special tokens sit at (0, 0): unrotated

    def score(pq: tuple[int, int], pk: tuple[int, int]) -> torch.Tensor:
        rq = rope(q, torch.tensor([[pq]]), 20)
        rk = rope(k, torch.tensor([[pk]]), 20)
        return (rq * rk).sum()

    torch.testing.assert_close(score((2, 3), (5, 1)), score((7, 9), (10, 7)), atol=1e-5, rtol=1e-5)


def test_token_positions_shift_patches_and_zero_specials() -> None:
    agg = Aggregator(get_preset("tiny"))
    pos = agg.token_positions(batch_frames=2, height=28, width=42, device=torch.device("cpu"))
    assert pos.shape == (2, 5 + 2 * 3, 2)
    assert pos[:, :5].abs().sum() == 0
    assert pos[0, 5:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]


def test_first_frame_gets_its_own_tokens() -> None:
    tokens = torch.stack([torch.full((1, 4), 1.0), torch.full((1, 4), 2.0)]).unsqueeze(0)  # [1, 2, 1, 4]
    flat = first_and_rest_tokens(tokens, batch=2, frames=3)
    assert flat.shape == (6, 1, 4)
    assert flat[:, 0, 0].tolist() == [1.0, 2.0, 2.0, 1.0, 2.0, 2.0]


def _dino(img_size: int = 70) -> DinoVisionTransformer:
    torch.manual_seed(0)
    vit = DinoVisionTransformer(img_size=img_size, patch_size=14, embed_dim=8, depth=0, num_heads=2)
    with torch.no_grad():
        vit.pos_embed.normal_()
    return vit


def test_pos_embed_used_as_stored_for_square_stored_grid() -> None:
    vit = _dino()
    assert vit.interpolate_pos_encoding(25, 70, 70) is vit.pos_embed


def test_pos_embed_interpolation_is_bicubic_antialiased_and_keeps_cls() -> None:
    vit = _dino()
    out = vit.interpolate_pos_encoding(3 * 4, 42, 56)
    assert out.shape == (1, 13, 8)
    assert torch.equal(out[:, 0], vit.pos_embed[:, 0])
    grid = vit.pos_embed[:, 1:].reshape(1, 5, 5, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(3, 4), mode="bicubic", antialias=True)
    torch.testing.assert_close(out[0, 1:], expected.permute(0, 2, 3, 1).reshape(12, 8))
    # A constant table stays constant through the resampling (weights sum to one).
    with torch.no_grad():
        vit.pos_embed.fill_(0.25)
    torch.testing.assert_close(vit.interpolate_pos_encoding(12, 42, 56), torch.full((1, 13, 8), 0.25))


def test_pos_embed_same_count_but_not_square_is_resampled() -> None:
    """Official shortcut needs both the stored patch count and a square image; 4x9 == 6x6 is not it."""
    vit = _dino(img_size=84)  # stored 6x6 = 36
    out = vit.interpolate_pos_encoding(36, 56, 126)
    assert out is not vit.pos_embed
    assert not torch.allclose(out[:, 1:], vit.pos_embed[:, 1:])
