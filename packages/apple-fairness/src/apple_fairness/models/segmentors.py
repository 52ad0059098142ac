"""Deployed segmentors split into a frozen encoder ``E`` and decoder ``D``: ``logits = D(E(x))``.

APPLE (Xu et al., MICCAI 2024) perturbs the latent between ``E`` and ``D``. Every segmentor here exposes

- ``encode(x) -> list[Tensor]``: the latents, high resolution first; ``latents[-1]`` is the bottleneck
  and the others are the skip connections a U-Net's decoder reads (SAM-like models have only the image
  embedding, so their list has one entry);
- ``decode(latents) -> logits``: (B, num_classes, H, W) class logits at the input resolution;
- ``forward(x) = decode(encode(x))``, bit-identical to the wrapped network's own forward.

Inputs are (B, in_channels, H, W) float images scaled to [0, 1]. Adapters for MONAI's ``UNet`` and
``AttentionUnet`` walk the MONAI module tree rather than re-implementing the networks, so a MONAI state
dict loads unchanged (``segmentor.net.load_state_dict``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "AttentionUNetSegmentor",
    "CMUNeXtBlock",
    "CMUNeXtSegmentor",
    "SAMSegmentor",
    "Segmentor",
    "UNetSegmentor",
]


class Segmentor(nn.Module):
    """Interface of a segmentor that APPLE can wrap: ``encode`` / ``decode`` around a latent list.

    Attributes:
        in_channels: channels of the input image.
        num_classes: output classes including the background (logit channels).
        latent_channels: channels of each latent returned by ``encode`` (bottleneck last).
    """

    in_channels: int
    num_classes: int
    latent_channels: tuple[int, ...]

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, in_channels, H, W) -> latents, the bottleneck last."""
        raise NotImplementedError

    def decode(self, latents: list[Tensor]) -> Tensor:
        """Latents as returned by :meth:`encode` -> (B, num_classes, H, W) logits."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


class UNetSegmentor(Segmentor):
    """MONAI's residual ``UNet`` (2D) with its encoder and decoder exposed.

    MONAI builds the U-Net recursively as ``Sequential(down_i, SkipConnection(inner), up_i)``; the
    adapter collects the ``down_i`` / ``up_i`` and the innermost ``bottom`` layer, so that
    ``encode(x) = [down_0(x), down_1(...), ..., bottom(...)]`` and ``decode`` applies
    ``up_i(cat(skip_i, h))`` from the bottom up, which is exactly ``UNet.forward``.

    Args:
        in_channels: image channels.
        num_classes: classes including background.
        channels: feature channels per level (top first); the last is the bottleneck.
        strides: down-sampling stride between levels (``len(channels) - 1`` values).
        num_res_units: residual units per block (MONAI's argument; 2 in MONAI's examples).
        norm: MONAI norm name, e.g. ``"batch"`` or ``"instance"``.
        dropout: dropout probability inside the blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from monai.networks.layers.simplelayers import SkipConnection
        from monai.networks.nets import UNet

        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.net = UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        downs, ups = [], []
        block: nn.Module = self.net.model
        while isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection):
            if block[1].mode != "cat" or block[1].dim != 1:
                raise ValueError(f"UNetSegmentor expects channel-concatenating skips, found {block[1].mode}")
            downs.append(block[0])
            ups.append(block[2])
            block = block[1].submodule
        # Plain lists: the modules stay registered under `net`, so the state dict is MONAI's own.
        self._downs, self._ups, self._bottom = downs, ups, block
        # down_i gives channels[i] (i < n - 1); the stride-1 bottom layer gives channels[-1].
        self.latent_channels = tuple(channels)

    def encode(self, x: Tensor) -> list[Tensor]:
        latents = []
        for down in self._downs:
            x = down(x)
            latents.append(x)
        latents.append(self._bottom(x))  # bottleneck (B, channels[-1], H / prod(strides), ...)
        return latents

    def decode(self, latents: list[Tensor]) -> Tensor:
        *skips, h = latents
        for up, skip in zip(reversed(self._ups), reversed(skips), strict=True):
            h = up(torch.cat([skip, h], dim=1))
        return h


class AttentionUNetSegmentor(Segmentor):
    """MONAI's ``AttentionUnet`` (Oktay et al. 2018) with its encoder and decoder exposed.

    MONAI nests ``AttentionLayer(submodule=Sequential(down_i, next_layer))``; each layer's forward is
    ``merge(cat(attention(g=upconv(inner(x)), x=x), upconv(inner(x))))``. The adapter stores the layers and
    the down blocks, so ``encode`` returns ``[head(x), down_0(...), ..., bottleneck]`` and ``decode`` runs
    the gated up path, which reproduces ``AttentionUnet.forward`` exactly.

    Args:
        in_channels, num_classes, channels, strides, dropout: as MONAI's ``AttentionUnet``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from monai.networks.nets import AttentionUnet
        from monai.networks.nets.attentionunet import AttentionLayer

        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.net = AttentionUnet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=tuple(channels),
            strides=tuple(strides),
            dropout=dropout,
        )
        self._head, layer, self._reduce = self.net.model
        layers, downs = [], []
        while True:
            layers.append(layer)
            inner = layer.submodule
            if isinstance(inner, nn.Sequential) and len(inner) == 2 and isinstance(inner[1], AttentionLayer):
                downs.append(inner[0])
                layer = inner[1]
            else:
                downs.append(inner)  # the bottom layer's down block gives the bottleneck
                break
        self._layers, self._downs = layers, downs
        self.latent_channels = tuple(channels)

    def encode(self, x: Tensor) -> list[Tensor]:
        latents = [self._head(x)]
        for down in self._downs:
            latents.append(down(latents[-1]))
        return latents

    def decode(self, latents: list[Tensor]) -> Tensor:
        *skips, h = latents
        for layer, skip in zip(reversed(self._layers), reversed(skips), strict=True):
            from_lower = layer.upconv(h)
            gated = layer.attention(g=from_lower, x=skip)
            h = layer.merge(torch.cat((gated, from_lower), dim=1))
        return self._reduce(h)


def _conv_gelu_bn(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups), nn.GELU(), nn.BatchNorm2d(cout)
    )


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class CMUNeXtBlock(nn.Module):
    """CMUNeXt block (Tang et al., ISBI 2024): ``depth`` x [large-kernel depthwise conv with a residual,
    inverted-bottleneck pointwise MLP], then a 3x3 conv changing ``cin`` to ``cout``. (B, cin, H, W) ->
    (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int, depth: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                _Residual(_conv_gelu_bn(cin, cin, kernel_size, groups=cin)),
                _conv_gelu_bn(cin, cin * 4),
                _conv_gelu_bn(cin * 4, cin),
            ]
        self.blocks = nn.Sequential(*layers)
        self.project = _conv_bn_relu(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.blocks(x))


class _SkipFusion(nn.Module):
    """CMUNeXt's skip-fusion block on ``cat(skip, up)``: a 2-group 3x3 conv then two pointwise convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            _conv_gelu_bn(cin, cin, 3, groups=2), _conv_gelu_bn(cin, cout * 4), _conv_gelu_bn(cout * 4, cout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(x)


class CMUNeXtSegmentor(Segmentor):
    """A CMUNeXt-style U-Net (Tang et al., "CMUNeXt: an efficient medical image segmentation network based
    on large kernel and skip fusion", ISBI 2024), written from the paper's description.

    Encoder: 3x3 stem, then one :class:`CMUNeXtBlock` per level with 2x2 max-pooling between levels.
    Decoder: bilinear x2 up-sampling + 3x3 conv, concatenation with the skip and a skip-fusion block; a
    1x1 conv gives the logits. Input sides must be divisible by ``2 ** (len(dims) - 1)``.

    Args:
        in_channels, num_classes: image channels; classes including background.
        dims: channels per level (the paper: (16, 32, 128, 160, 256)).
        depths: CMUNeXt blocks per level (the paper: (1, 1, 1, 3, 1)).
        kernel_sizes: depthwise kernel per level (the paper: (3, 3, 7, 7, 7)).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        dims: tuple[int, ...] = (16, 32, 128, 160, 256),
        depths: tuple[int, ...] = (1, 1, 1, 3, 1),
        kernel_sizes: tuple[int, ...] = (3, 3, 7, 7, 7),
    ) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(kernel_sizes) >= 2:
            raise ValueError(f"dims {dims}, depths {depths}, kernel_sizes {kernel_sizes}: equal lengths >= 2")
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.latent_channels = tuple(dims)
        self.stem = _conv_bn_relu(in_channels, dims[0])
        chans = (dims[0], *dims)
        self.encoders = nn.ModuleList(
            CMUNeXtBlock(chans[i], chans[i + 1], depths[i], kernel_sizes[i]) for i in range(len(dims))
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), _conv_bn_relu(dims[i + 1], dims[i]))
            for i in range(len(dims) - 1)
        )
        self.fusions = nn.ModuleList(_SkipFusion(2 * dims[i], dims[i]) for i in range(len(dims) - 1))
        self.head = nn.Conv2d(dims[0], num_classes, 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        latents = [self.encoders[0](self.stem(x))]
        for encoder in self.encoders[1:]:
            latents.append(encoder(self.pool(latents[-1])))
        return latents

    def decode(self, latents: list[Tensor]) -> Tensor:
        *skips, h = latents
        for i in reversed(range(len(skips))):
            h = self.fusions[i](torch.cat([skips[i], self.ups[i](h)], dim=1))
        return self.head(h)


# ImageNet statistics for [0, 1] inputs: SAM normalises its RGB inputs with them.
_SAM_MEAN = (0.485, 0.456, 0.406)
_SAM_STD = (0.229, 0.224, 0.225)


class SAMSegmentor(Segmentor):
    """A SAM-like segmentor: a ViT image encoder ``E`` and SAM's two-way-transformer mask decoder ``D``,
    built from transformers' ``SamModel`` (Kirillov et al. 2023).

    The latent is the image embedding (B, 256, S/16, S/16). Two prompt modes give the two SAM-like models
    of the APPLE paper:

    - ``prompt="none"`` (SAMed-style, Zhang & Liu 2023): no prompt; the decoder has ``num_classes`` mask
      tokens (``num_multimask_outputs = num_classes``) and its masks are the class logits.
    - ``prompt="box"`` (MedSAM-style, Ma et al. 2024): a box prompt covering the whole image (MedSAM's box
      comes from a user; an automatic pipeline has none, so the full frame is the documented default);
      one mask ``m`` becomes the two-class logits ``(0, m)`` (so softmax gives ``sigmoid(m)``).

    The decoder's masks (at 4x the embedding size) are bilinearly up-sampled to the input size ``S``.

    Args:
        in_channels: 1 (grey, repeated to RGB) or 3.
        num_classes: classes including background; ``prompt="box"`` needs 2.
        image_size: the square input side ``S`` (SAM: 1024); inputs must have this size.
        patch_size, hidden_size, num_layers, num_heads, window_size, global_attn_indexes, mlp_dim: the
            ViT encoder (``SamVisionConfig``).
        embed_dim: channels of the image embedding and of the decoder (SAM: 256).
        prompt: ``"none"`` or ``"box"``, see above.
        normalize: apply SAM's ImageNet normalisation to the [0, 1] input.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        image_size: int = 1024,
        patch_size: int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        mlp_dim: int | None = None,
        embed_dim: int = 256,
        prompt: str = "none",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        from transformers import SamConfig, SamModel

        if prompt not in ("none", "box"):
            raise ValueError(f"SAMSegmentor prompt={prompt!r}; expected 'none' (SAMed) or 'box' (MedSAM)")
        if prompt == "box" and num_classes != 2:
            raise ValueError(
                f"SAMSegmentor prompt='box' gives one mask; num_classes={num_classes}, expected 2"
            )
        if in_channels not in (1, 3):
            raise ValueError(f"SAMSegmentor in_channels={in_channels}; expected 1 or 3")
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.image_size, self.prompt, self.normalize = int(image_size), prompt, bool(normalize)
        vision = {
            "hidden_size": hidden_size,
            "output_channels": embed_dim,
            "num_hidden_layers": num_layers,
            "num_attention_heads": num_heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "window_size": window_size,
            "global_attn_indexes": list(global_attn_indexes),
            "num_pos_feats": embed_dim // 2,  # the shared positional embedding has embed_dim channels
        }
        if mlp_dim is not None:
            vision["mlp_dim"] = mlp_dim
        config = SamConfig(
            vision_config=vision,
            prompt_encoder_config={
                "hidden_size": embed_dim,
                "image_size": image_size,
                "patch_size": patch_size,
            },
            mask_decoder_config={
                "hidden_size": embed_dim,
                "num_multimask_outputs": num_classes if prompt == "none" else 3,
            },
        )
        self.sam = SamModel(config)
        self.latent_channels = (embed_dim,)
        self.register_buffer("pixel_mean", torch.tensor(_SAM_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(_SAM_STD).view(1, 3, 1, 1), persistent=False)

    def load_sam_weights(self, state_dict: dict[str, Tensor]) -> dict[str, list[str]]:
        """Load a transformers-format SAM state dict (e.g. ``model.safetensors`` of facebook/sam-vit-base
        or a MedSAM conversion), skipping tensors whose shape differs (SAMed's extra mask tokens).

        Returns:
            ``{"missing": [...], "unexpected": [...], "skipped_shape": [...]}`` key lists.
        """
        own = self.sam.state_dict()
        state = {k.removeprefix("sam."): v for k, v in state_dict.items()}
        skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        state = {k: v for k, v in state.items() if k not in skipped}
        result = self.sam.load_state_dict(state, strict=False)
        return {
            "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys),
            "skipped_shape": skipped,
        }

    def encode(self, x: Tensor) -> list[Tensor]:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"SAMSegmentor: input of size {tuple(x.shape[-2:])}; "
                f"expected {self.image_size}x{self.image_size}"
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.pixel_mean) / self.pixel_std
        return [self.sam.get_image_embeddings(pixel_values=x)]  # (B, embed_dim, S / patch, S / patch)

    def decode(self, latents: list[Tensor]) -> Tensor:
        (embedding,) = latents
        batch = embedding.shape[0]
        boxes = None
        if self.prompt == "box":
            side = float(self.image_size - 1)
            boxes = embedding.new_tensor([[[0.0, 0.0, side, side]]]).expand(batch, 1, 4)
        out = self.sam(image_embeddings=embedding, input_boxes=boxes, multimask_output=self.prompt == "none")
        masks = out.pred_masks[:, 0]  # (B, masks, 4 * S / patch, ...)
        if self.prompt == "box":
            masks = torch.cat([torch.zeros_like(masks), masks], dim=1)
        return nn.functional.interpolate(
            masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )


def segmentor_summary(segmentor: Segmentor) -> dict[str, Any]:
    """Plain facts about a segmentor (class, classes, latent channels) for reports and logs."""
    return {
        "class": type(segmentor).__name__,
        "in_channels": segmentor.in_channels,
        "num_classes": segmentor.num_classes,
        "latent_channels": list(segmentor.latent_channels),
    }
