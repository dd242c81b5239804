"""SepTr, the Separable Transformer (Ristea et al. 2022, arXiv:2203.09581; the
LeRaC paper's reference [20]), as that paper describes it.

Every time-frequency bin of the spectrogram (B, C, H, W) is a token: a linear projection
C -> dim gives the token map (B, H, W, dim). A SepTr block attends along one axis at a
time: a class token is prepended to every column (the H bins of one time step), a learned
positional embedding of (H + 1, dim) is added and a one-layer transformer runs on each
column separately; the columns' class-token outputs are averaged into one class token,
which is prepended to every row (the W time steps of one bin) with a positional embedding
of (W + 1, dim) for a transformer along W; the mean of the rows' class tokens goes on to
the next block. The head is one linear layer on the last class token.

The transformers are ViT-style, one layer each: pre-norm multi-head attention (``heads``
heads of ``dim_head``, no bias in the qkv projection) and a pre-norm MLP dim -> mlp_dim ->
dim with GELU, both residual, no dropout. Defaults (dim 256, 3 blocks, 5 heads of 256,
MLP 256) give 8.87M parameters at 128 x 128 with 50 classes.

``down_sample=[h, w]`` average-pools the token map by (h, w) inside each block (the axis
transformers then see H/h and W/w tokens) and repeats the result back to full size, as
the released code's ``down_sample_input`` option does; off by default, as in the paper.

Curriculum by Smoothing (``cbs_sites``): the token map entering each block, (B, H, W, dim)
channels last ("nhwc"); for the first block that is the projected spectrogram. It is the
spectrogram-shaped tensor of the model, the analogue of a CNN's feature map after each
conv (CBS smooths after every conv of a ResNet); the class tokens are not a map and are
left alone. ``cbs_where=input`` keeps only the first site.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Tensor) -> Tensor:  # (N, L, dim), attention within each sequence
        n, length, _ = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(dim_head)
        return self.out(y.transpose(1, 2).reshape(n, length, -1))


class AxisTransformer(nn.Module):
    """One pre-norm transformer layer over sequences (N, L, dim)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SepTrBlock(nn.Module):
    """Attention along H (within each column), then along W (within each row)."""

    def __init__(
        self,
        size: tuple[int, int],
        dim: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        down_sample: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.down_sample = down_sample
        h, w = (
            size if down_sample is None else (size[0] // down_sample[0], size[1] // down_sample[1])
        )
        if h < 1 or w < 1:
            raise ValueError(f"down_sample={down_sample} leaves no tokens of a {size} input")
        self.pos_h = nn.Parameter(torch.randn(h + 1, dim))
        self.pos_w = nn.Parameter(torch.randn(w + 1, dim))
        self.token_map = nn.Identity()  # the map CBS smooths (see cbs_sites)
        self.along_h = AxisTransformer(dim, heads, dim_head, mlp_dim)
        self.along_w = AxisTransformer(dim, heads, dim_head, mlp_dim)

    @staticmethod
    def attend(transformer: nn.Module, tokens: Tensor, cls: Tensor, pos: Tensor):
        """Tokens (B, S, L, dim): S sequences of L; each gets ``cls`` (B, dim) prepended."""
        b, s, length, dim = tokens.shape
        seqs = torch.cat([cls[:, None, None, :].expand(b, s, 1, dim), tokens], dim=2) + pos
        out = transformer(seqs.reshape(b * s, length + 1, dim)).view(b, s, length + 1, dim)
        return out[:, :, 1:], out[:, :, 0].mean(dim=1)

    def forward(self, tokens: Tensor, cls: Tensor) -> tuple[Tensor, Tensor]:
        size = tokens.shape[1:3]
        if self.down_sample is not None:
            pooled = F.avg_pool2d(tokens.permute(0, 3, 1, 2), self.down_sample)
            tokens = pooled.permute(0, 2, 3, 1)
        tokens = self.token_map(tokens)  # (B, H, W, dim)
        columns, cls = self.attend(self.along_h, tokens.transpose(1, 2), cls, self.pos_h)
        rows, cls = self.attend(self.along_w, columns.transpose(1, 2), cls, self.pos_w)
        if self.down_sample is not None:
            full = F.interpolate(rows.permute(0, 3, 1, 2), size=tuple(size), mode="nearest")
            rows = full.permute(0, 2, 3, 1)
        return rows, cls


class SepTr(nn.Module):
    """SepTr for spectrograms (B, in_channels, H, W) of ``image_size`` (H, W) or H = W.

    Args:
        num_classes: outputs of the head.
        in_channels: channels of the input (1 for a spectrogram).
        image_size: (H, W) = (mel bins, frames), or one int for a square input; fixes the
            positional embeddings.
        dim: token width; depth: blocks; heads, dim_head: attention; mlp_dim: MLP width.
        down_sample: optional (h, w) pooling inside each block (see module docstring).
        cbs_where: ``every_block`` (default) or ``input``: where CBS smooths.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int | Sequence[int] = (128, 128),
        dim: int = 256,
        depth: int = 3,
        heads: int = 5,
        dim_head: int = 256,
        mlp_dim: int = 256,
        down_sample: Sequence[int] | None = None,
        cbs_where: str = "every_block",
    ) -> None:
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if cbs_where not in ("every_block", "input"):
            raise ValueError(f"cbs_where must be every_block or input, got {cbs_where!r}")
        self.cbs_where = cbs_where
        pool = None if down_sample is None else tuple(down_sample)
        self.cls_token = nn.Parameter(torch.randn(dim))
        self.embed = nn.Linear(in_channels, dim)
        self.blocks = nn.ModuleList(
            SepTrBlock(size, dim, heads, dim_head, mlp_dim, pool) for _ in range(depth)
        )
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x.permute(0, 2, 3, 1))  # (B, H, W, dim)
        cls = self.cls_token.expand(len(x), -1)
        for block in self.blocks:
            tokens, cls = block(tokens, cls)
        return self.head(cls)

    def cbs_sites(self) -> list[tuple[nn.Module, str]]:
        """The token map (B, H, W, dim) entering each block, channels last."""
        blocks = self.blocks if self.cbs_where == "every_block" else self.blocks[:1]
        return [(block.token_map, "nhwc") for block in blocks]
