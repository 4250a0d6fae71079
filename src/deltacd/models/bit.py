"""BIT: a bitemporal image transformer for change detection (a compact re-implementation).

Chen, Qi, Shi, "Remote Sensing Image Change Detection With Transformers", IEEE TGRS 2021,
doi:10.1109/TGRS.2021.3095166 (authors' code: github.com/justchenhao/BIT_CD).

Pipeline, for each date through shared weights:

1. CNN backbone: ResNet-18 (timm, random initialisation) truncated after its third stage,
   with that stage dilated so features stay at stride 8 (as BIT does), upsampled x2 and
   reduced by a 3x3 convolution to ``embed_dim`` channels: [B, embed_dim, H/4, W/4].
2. Semantic tokeniser: a 1x1 convolution gives ``token_len`` spatial attention maps, each
   softmax-normalised over the pixels; each token is the attention-weighted sum of the
   features: [B, token_len, embed_dim].
3. Transformer encoder (``torch.nn.TransformerEncoder``) over the 2 x token_len tokens of
   both dates together, with a learned position embedding, so tokens of one date can attend
   to the other's.
4. Transformer decoder: the pixels of each date are queries that cross-attend to that
   date's tokens, projecting the token context back to pixel features.
5. |pixels before - pixels after|, upsampled to the input size, two 3x3 convolutions ->
   logits [B, num_classes, H, W].

Deliberate differences from the authors' code:

* The decoder layers are cross-attention + MLP blocks built from ``nn.MultiheadAttention``,
  not ``nn.TransformerDecoderLayer``: that layer always adds self-attention among its
  queries, here the H/4 x W/4 pixels, which is quadratic in the tile area (a 512x512 tile
  would attend 16384 x 16384 per head) and is exactly what BIT's token design avoids. BIT's
  decoder is cross-attention only, as here.
* No learned position embedding on the decoder's pixel queries (BIT's default adds one of
  fixed size 64x64): it would tie the model to one tile size and make a pixel's prediction
  depend on its place in the tile, which is arbitrary under tiled inference.
* Attention inner width equals ``embed_dim`` (``nn.MultiheadAttention`` splits ``embed_dim``
  over heads), where BIT uses separate head widths; with the defaults (32 channels,
  4 heads) the decoder's head width is 8, BIT's ``dd8``/``dedim8`` setting.
* Both dates go through the backbone as one batch of 2B images (shared batch-norm
  statistics in training mode).
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deltacd.errors import InputError
from deltacd.models.fc import check_pair


class _Tokenizer(nn.Module):
    """Semantic tokeniser: [B, C, h, w] features -> [B, L, C] tokens by spatial attention."""

    def __init__(self, channels: int, token_len: int) -> None:
        super().__init__()
        self.attention = nn.Conv2d(channels, token_len, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        weights = self.attention(features).flatten(2).softmax(dim=-1)  # [B, L, h*w], sums to 1 per token
        return torch.einsum("bln,bcn->blc", weights, features.flatten(2))


class _CrossAttentionLayer(nn.Module):
    """Pre-norm decoder layer: pixel queries cross-attend to tokens, then an MLP.

    ``pixels`` [B, N, C], ``tokens`` [B, L, C] -> [B, N, C]. Cost is linear in N.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        # One norm for queries and keys/values, as BIT's PreNorm2.
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, pixels: Tensor, tokens: Tensor) -> Tensor:
        memory = self.norm(tokens)
        pixels = pixels + self.attention(self.norm(pixels), memory, memory, need_weights=False)[0]
        return pixels + self.mlp(self.norm_mlp(pixels))


class BIT(nn.Module):
    """BIT change detector: ResNet-18 stem, semantic tokens, transformer encoder/decoder, |difference| head.

    Chen, Qi, Shi, IEEE TGRS 2021, doi:10.1109/TGRS.2021.3095166.

    Input: ``before``, ``after`` [B, in_channels, H, W], H and W multiples of 8.
    Output: change logits [B, num_classes, H, W]. Depends on the order of the dates (the
    token position embedding marks which date a token comes from).

    Args:
        in_channels: bands per date.
        num_classes: output channels (1 for binary change).
        embed_dim: channels of the pixel features and tokens (BIT: 32).
        token_len: semantic tokens per date (BIT: 4).
        encoder_layers: transformer encoder layers over the tokens (BIT: 1).
        decoder_layers: token-to-pixel cross-attention layers (BIT: 8).
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_dim: hidden width of the transformer MLPs (BIT: 2 x embed_dim).
        dropout: dropout inside the transformer layers (BIT: 0).
    """

    name = "bit"
    #: Stem stride 2, max-pool 2, stage-2 stride 2; stage 3 is dilated instead of strided.
    size_multiple: int = 8

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        embed_dim: int = 32,
        token_len: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 8,
        num_heads: int = 4,
        mlp_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise InputError(
                f"BIT needs in_channels >= 1 and num_classes >= 1; got in_channels={in_channels}, "
                f"num_classes={num_classes}"
            )
        if embed_dim % num_heads:
            raise InputError(f"BIT: num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        if token_len < 1 or encoder_layers < 1 or decoder_layers < 1:
            raise InputError(
                f"BIT needs token_len, encoder_layers and decoder_layers >= 1; got {token_len}, "
                f"{encoder_layers}, {decoder_layers}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes

        # ResNet-18 up to stage 3 (index 3 in timm's feature list); output_stride=8 dilates
        # stage 3 instead of striding it, and features_only drops stage 4 and the classifier.
        # pretrained=False: nothing is downloaded; timm adapts the stem to in_channels.
        self.backbone = timm.create_model(
            "resnet18",
            pretrained=False,
            features_only=True,
            out_indices=(3,),
            output_stride=8,
            in_chans=in_channels,
        )
        backbone_channels = self.backbone.feature_info.channels()[-1]
        self.reduce = nn.Conv2d(backbone_channels, embed_dim, kernel_size=3, padding=1)
        self.tokenizer = _Tokenizer(embed_dim, token_len)
        # One position per token of both dates: it also tells the encoder which date a token is from.
        self.token_position = nn.Parameter(torch.zeros(1, 2 * token_len, embed_dim))
        nn.init.trunc_normal_(self.token_position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim,
            num_heads,
            dim_feedforward=mlp_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,  # pre-norm, as BIT
        )
        # enable_nested_tensor only applies to post-norm layers; False avoids a warning.
        self.token_encoder = nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
        self.token_decoder = nn.ModuleList(
            _CrossAttentionLayer(embed_dim, num_heads, mlp_dim, dropout) for _ in range(decoder_layers)
        )
        # BIT's classifier: conv3x3-BN-ReLU-conv3x3 at input resolution.
        self.head = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim, num_classes, kernel_size=3, padding=1),
        )

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        check_pair("BIT", before, after, self.in_channels, self.size_multiple)
        batch, _, height, width = before.shape
        # Both dates as one batch: [2B, C, H, W] -> [2B, D, H/8, W/8] -> x2 -> [2B, D, H/4, W/4].
        features = self.backbone(torch.cat([before, after], dim=0))[-1]
        features = self.reduce(F.interpolate(features, scale_factor=2.0, mode="nearest"))
        _, dim, h, w = features.shape

        tokens = self.tokenizer(features)  # [2B, L, D]
        # Encode the 2L tokens of each pair together: [B, 2L, D].
        pair_tokens = torch.cat([tokens[:batch], tokens[batch:]], dim=1) + self.token_position
        pair_tokens = self.token_encoder(pair_tokens)
        token_len = tokens.shape[1]
        tokens = torch.cat([pair_tokens[:, :token_len], pair_tokens[:, token_len:]], dim=0)  # [2B, L, D]

        pixels = features.flatten(2).transpose(1, 2)  # [2B, h*w, D]
        for layer in self.token_decoder:
            pixels = layer(pixels, tokens)
        pixels = pixels.transpose(1, 2).reshape(2 * batch, dim, h, w)

        difference = (pixels[:batch] - pixels[batch:]).abs()
        difference = F.interpolate(difference, size=(height, width), mode="bilinear", align_corners=False)
        return self.head(difference)
