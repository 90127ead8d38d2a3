"""MAE, "Masked Autoencoders Are Scalable Vision Learners" (He, Chen, Xie, Li, Dollar & Girshick,
CVPR 2022), for a ViT trunk (``model.backbone=timm:vit_*``).

* views:  one view per image: random resized crop (scale 0.2-1.0) and horizontal flip, the only
          augmentation MAE needs (appendix A.1); normalized with the model's mean / std, as the
          trunk sees its input.
* mask:   a random 75% of the view's patches is masked, uniformly without replacement (sec. 3
          "Masking", lightly's ``random_token_mask``); the class / register tokens are always kept.
* encoder: the trunk's own patch embedding, position embedding and blocks on the *visible*
          patches only (sec. 3 "MAE encoder"; lightly's ``MaskedVisionTransformerTIMM`` with
          ``idx_keep``), then a LayerNorm (the trunk's final norm is pruned, see
          :mod:`must.models.vit`).
* decoder: a linear projection to ``decoder_dim``, mask tokens at the masked positions, fixed
          sine-cosine position embeddings and a few transformer blocks (sec. 3 "MAE decoder";
          lightly's ``MaskedVisionTransformerDecoderTIMM``), then a linear layer to the pixels of
          each patch.
* loss:   mean squared error between predicted and target pixels of the *masked* patches only
          (sec. 3 "Reconstruction target"); with ``norm_pix_loss`` the target of each patch is
          normalized by its own mean and standard deviation (Table 1d: better representations).

:class:`MAEHead` holds only the decoder side (and the encoder's final LayerNorm). It keeps a
reference to the model (never a submodule: ``heads.mae.*`` holds no trunk weights) and runs the
trunk's ViT itself, so ``backbone.trunk.*`` is what MAE trains and what transfer loads. The
simple feature pyramid and the FPN are not used by MAE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.models.utils import (get_at_index, normalize_mean_var, patchify, random_token_mask, repeat_token,
                                  set_at_index, unpatchify)
from torch import Tensor, nn
from torchvision.transforms import v2

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import (BatchMean, FeaturesFn, SelfSupervisedTask, present_views, seeded,
                                             to_unit, write_text)

VIT_BACKBONE = "timm:vit_tiny_patch16_224"
"""The backbone a refusal suggests (any ``timm:vit_*`` works)."""


class MAEHead(nn.Module):
    """``forward_masked(images, mask_ratio)``: encode the visible patches with the model's ViT,
    decode, and predict the pixels of the masked ones. The decoder is built by :meth:`attach_trunk`
    (``MultiTaskModel.__init__`` calls it), when the trunk's patch size, and so the token grid of a
    view, is known."""

    reads_pyramid = False

    def __init__(self, encoder_dim: int, view_size: int, mask_ratio: float, decoder_dim: int,
                 decoder_depth: int, decoder_heads: int) -> None:
        super().__init__()
        self.view_size, self.mask_ratio = view_size, mask_ratio
        self.decoder_dim, self.decoder_depth, self.decoder_heads = decoder_dim, decoder_depth, decoder_heads
        self.encoder_norm = nn.LayerNorm(encoder_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(encoder_dim, decoder_dim)
        self.decoder: MaskedVisionTransformerDecoderTIMM | None = None
        self.prediction: nn.Linear | None = None
        self.patch_size = 0
        self.prefix_tokens = 0
        # References, not submodules: the model owns the trunk (lightly's wrapper holds it too).
        self.trunk_owner: list[nn.Module] = []
        self.masked_encoder: list[MaskedVisionTransformerTIMM] = []

    def attach_trunk(self, model: nn.Module) -> None:
        """Keeps a reference to ``model`` (its ViT trunk, ``mean``, ``std``) and builds the decoder
        for the view's token grid."""
        trunk = vit_trunk(model)
        patch = trunk.patch_embed.patch_size
        self.patch_size, self.prefix_tokens = int(patch[0]), int(trunk.num_prefix_tokens)
        if self.view_size % self.patch_size:
            raise ConfigError(f"mae: view_size {self.view_size} must be a multiple of the backbone's patch size "
                              f"{self.patch_size}; set the task option view_size")
        patches = (self.view_size // self.patch_size) ** 2
        if not 1 <= kept_count(patches, self.mask_ratio) < patches:
            raise ConfigError(f"mae: mask_ratio {self.mask_ratio} leaves no visible or no masked patch of the "
                              f"{patches} patches of a {self.view_size} px view; change mask_ratio or view_size")
        self.trunk_owner = [model]
        self.masked_encoder = [MaskedVisionTransformerTIMM(
            vit=trunk, weight_initialization="skip", pos_embed_initialization="skip")]
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=patches, embed_dim=self.decoder_dim, depth=self.decoder_depth,
            num_heads=self.decoder_heads, num_prefix_tokens=self.prefix_tokens)
        self.prediction = nn.Linear(self.decoder_dim, self.patch_size**2 * 3)
        for layer in (self.encoder_norm, self.decoder_embed, self.prediction):
            layer.apply(init_weights)  # MAE's initialization (xavier uniform linear layers)

    @property
    def model(self) -> nn.Module:
        if not self.trunk_owner or self.decoder is None or self.prediction is None:
            raise RuntimeError("MAEHead needs attach_trunk(model) before use (MultiTaskModel does it)")
        return self.trunk_owner[0]

    def forward_masked(self, images: Tensor) -> dict[str, Tensor]:
        """``float [B, 3, s, s]`` in ``[0, 1]`` -> ``prediction [B, M, p*p*3]`` (the masked patches'
        pixels), ``patches [B, L, p*p*3]`` (every patch of the normalized view) and ``masked
        [B, M]`` (indices of the masked patches in ``patches``)."""
        model = self.model
        normalized = (images - model.mean) / model.std
        patches = patchify(normalized, self.patch_size)
        batch, count = patches.shape[:2]
        visible, masked = random_token_mask((batch, count), self.mask_ratio, mask_class_token=True,
                                            device=images.device)
        # The trunk's class / register tokens come first in its sequence and are always kept.
        prefix = torch.arange(self.prefix_tokens, device=images.device).expand(batch, -1)
        keep = torch.cat([prefix, visible + self.prefix_tokens], dim=1)
        encoded = self.masked_encoder[0].encode(normalized, idx_keep=keep)
        tokens = self.decoder_embed(self.encoder_norm(encoded))
        sequence = repeat_token(self.decoder.mask_token, (batch, self.prefix_tokens + count)).to(tokens.dtype)
        decoded = self.decoder(set_at_index(sequence, keep, tokens))
        prediction = self.prediction(get_at_index(decoded, masked + self.prefix_tokens))
        return {"prediction": prediction, "patches": patches, "masked": masked,
                "mean": model.mean.flatten(), "std": model.std.flatten()}


def vit_trunk(model: nn.Module) -> nn.Module:
    """The timm ViT inside ``model.backbone`` (a :class:`~must.models.vit.VisionTransformerBackbone`),
    or a :class:`ConfigError` saying which backbone to use."""
    from timm.models.vision_transformer import VisionTransformer

    backbone = getattr(model, "backbone", None)
    trunk = getattr(backbone, "trunk", None)
    name = getattr(backbone, "name", type(backbone).__name__)
    if not isinstance(trunk, VisionTransformer) or getattr(trunk, "dist_token", None) is not None:
        raise ConfigError(f"mae needs a ViT backbone (a timm VisionTransformer), got '{name}'; set "
                          f"model.backbone={VIT_BACKBONE} (or another timm:vit_*)")
    return trunk


def kept_count(patches: int, mask_ratio: float) -> int:
    """Visible patches of ``patches`` at ``mask_ratio`` (lightly's ``random_token_mask`` rounding)."""
    return int(patches * (1 - mask_ratio))


def mae_transform(size: int) -> v2.Compose:
    """MAE appendix A.1: random resized crop (scale 0.2-1.0) and horizontal flip."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), v2.RandomHorizontalFlip()])


class ReconstructionError(BatchMean):
    """Mean over masked pixels of the squared reconstruction error: the task's own loss as its
    metric (lower is better)."""

    name = "mse"

    def __init__(self, task: MAETask) -> None:
        super().__init__()
        self.task = task

    def measure(self, output: dict[str, Tensor]) -> tuple[Tensor, int]:
        error = (output["prediction"].detach().float() - self.task.targets(output).float()) ** 2
        return error.mean(), error.numel()


class MAETask(SelfSupervisedTask):
    """Masked autoencoding of one view per image (see the module docstring)."""

    name = "mae"
    primary_metric = "mse"

    def __init__(self, view_size: int = 64, mask_ratio: float = 0.75, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4, norm_pix_loss: bool = True) -> None:
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if decoder_dim < 1 or decoder_depth < 1 or decoder_heads < 1 or decoder_dim % decoder_heads:
            raise ConfigError(f"decoder_dim {decoder_dim} must be a positive multiple of decoder_heads "
                              f"{decoder_heads}, and decoder_depth {decoder_depth} positive")
        self.view_size, self.mask_ratio = view_size, mask_ratio
        self.decoder_dim, self.decoder_depth, self.decoder_heads = decoder_dim, decoder_depth, decoder_heads
        self.norm_pix_loss = norm_pix_loss
        self.transform = mae_transform(view_size)

    def build_head(self, spec: FeatureSpec) -> MAEHead:
        # A ViT backbone's C5 is its token map (max-pooled): its channels are the embedding width.
        return MAEHead(spec.c5_channels, self.view_size, self.mask_ratio, self.decoder_dim, self.decoder_depth,
                       self.decoder_heads)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"view": uint8 [3, s, s]}``."""
        with seeded(generator):
            return {"view": self.transform(image)}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        """The head runs the trunk's ViT on the visible patches itself (``features_fn`` would run
        every patch through it, and the pyramid)."""
        views = present_views(target)
        if views is None:
            return None
        return head.forward_masked(to_unit(views["view"]))

    def targets(self, output: dict[str, Tensor]) -> Tensor:
        """The pixels of the masked patches, normalized per patch with ``norm_pix_loss`` (MAE
        sec. 3, Table 1d; unbiased variance, eps 1e-6 as the paper's code)."""
        target = get_at_index(output["patches"], output["masked"])
        return normalize_mean_var(target, dim=-1) if self.norm_pix_loss else target

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """MSE over the masked patches only (MAE sec. 3 "Reconstruction target")."""
        return {"loss": F.mse_loss(output["prediction"].float(), self.targets(output).float())}

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        """``float [2, 3, s, s]`` in ``[0, 1]`` per image: the masked view (masked patches grey) and
        the reconstruction (predicted masked patches, visible patches as given; MAE Figure 2)."""
        if output is None:
            return []
        patches = output["patches"].detach().float()
        masked = output["masked"]
        prediction = output["prediction"].detach().float()
        if self.norm_pix_loss:  # back to pixels with each patch's own statistics
            original = get_at_index(patches, masked)
            spread = (original.var(dim=-1, keepdim=True) + 1e-6).sqrt()
            prediction = prediction * spread + original.mean(dim=-1, keepdim=True)
        patch_size = int(round((patches.shape[-1] / 3) ** 0.5))
        hidden = set_at_index(patches, masked, torch.zeros_like(prediction))  # 0 = the mean colour
        rebuilt = set_at_index(patches, masked, prediction)
        mean, std = output["mean"].view(1, 3, 1, 1).float(), output["std"].view(1, 3, 1, 1).float()
        pairs = [unpatchify(part, patch_size) * std + mean for part in (hidden, rebuilt)]
        return list(torch.stack(pairs, dim=1).clamp(0, 1).cpu().unbind(0))

    def metric(self) -> ReconstructionError:
        return ReconstructionError(self)

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """The image with the masked view and its reconstruction side by side underneath."""
        height, width = image.shape[:2]
        pair = torch.cat(list(prediction.float()), dim=-1)  # [3, s, 2s]
        strip = F.interpolate(pair[None], size=(max(1, width // 2), width), mode="nearest")[0]
        strip_pixels = (strip.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        return write_text(np.concatenate([np.asarray(image, dtype=np.uint8), strip_pixels], axis=0), self.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "view_size": self.view_size,
                "mask_ratio": self.mask_ratio, "decoder_dim": self.decoder_dim,
                "decoder_depth": self.decoder_depth, "norm_pix_loss": self.norm_pix_loss}
