"""The baseline's networks, compact versions of the MEAD paper's: audio-to-landmarks, face classifiers,
neutral-to-emotion transformer, refinement U-Net and an LSGAN PatchGAN discriminator.

Images are RGB float tensors in [-1, 1], (B, 3, S, S) (the shards hold RGB); any S that is a
multiple of 8 works (64 on CPU, 256 or 384 on a GPU).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from meadkit.baseline.config import A2L_ANCHORS, REFERENCE_INPUTS
from meadkit.baseline.flow import neutral_flow
from meadkit.baseline.pca import MOUTH_JAW, ShapePCA

N_EMOTIONS = 8
N_LEVELS = 3


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


def _conv_block(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 if stride == 1 else 1), _norm(cout), nn.LeakyReLU(0.2))


def _up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(cin, cout))


def _residual_image(base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`base` changed by `delta` in logit space, so the output stays in (-1, 1) and zero delta keeps `base`."""
    return torch.tanh(torch.atanh(base.clamp(-0.99, 0.99)) + delta)


class Audio2Landmark(nn.Module):
    """LSTM over an MFCC window (context x n_mfcc: 30 x 28, the shard set's), then a linear layer to the PCA
    coefficients of mouth+jaw landmarks.

    With `use_labels` the linear layer also sees the emotion and intensity one-hots (the static mouth shape
    of a smile or a dropped jaw is not in the audio); `use_labels=False` is the paper's audio-only network.
    With `anchor="neutral"` the coefficients are of the change from the actor's neutral-frame mouth+jaw: a face's own
    mouth, not the corpus mean, is where its speech starts from (on unseen faces that neutral frame alone is 28%
    closer than the mean shape), and a new face's shape is kept whole instead of squeezed into a PCA of a few training
    faces. The neutral shape is added, not fed to the linear layer: fed, it learnt the few training faces (unseen-face
    error 3.1 px against 0.89 px added). `anchor="none"` is the paper's (coefficients of the shape itself).
    The MFCC standardisation, the shape PCA, the per-label mean shapes and (anchored) the training shapes' mean are
    buffers, so they travel in the state dict; `predict_shape` gives landmarks in crop units.
    """

    def __init__(self, n_coeffs: int, hidden: int, layers: int, use_labels: bool, n_mfcc: int,
                 n_points: int = len(MOUTH_JAW), anchor: str = "none"):
        super().__init__()
        if anchor not in A2L_ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(A2L_ANCHORS)}, got {anchor!r}")
        self.use_labels, self.anchor = use_labels, anchor
        self.lstm = nn.LSTM(n_mfcc, hidden, layers, batch_first=True)
        extra = (N_EMOTIONS + N_LEVELS if use_labels else 0)
        self.head = nn.Linear(hidden + extra, n_coeffs)
        self.register_buffer("mfcc_mean", torch.zeros(n_mfcc))
        self.register_buffer("mfcc_std", torch.ones(n_mfcc))
        self.register_buffer("pca_mean", torch.zeros(2 * n_points))
        self.register_buffer("pca_components", torch.zeros(n_coeffs, 2 * n_points))
        self.register_buffer("label_mean_shapes", torch.zeros(N_EMOTIONS, N_LEVELS, 2 * n_points))
        if anchor == "neutral":  # (runs made before the choice have none)
            self.register_buffer("shape_mean", torch.zeros(2 * n_points))

    def set_mean_shape(self, mean: torch.Tensor) -> None:
        """Anchored: store the training shapes' mean (D,), the start where a neutral frame has no face. Unanchored, the
        PCA's mean is that shape: nothing to store."""
        if self.anchor == "neutral":
            self.shape_mean.copy_(mean)

    def set_statistics(self, pca: ShapePCA, mfcc_mean: torch.Tensor, mfcc_std: torch.Tensor, label_means: torch.Tensor) -> None:
        """Store the fitted PCA (zero-padded to n_coeffs components), the MFCC mean/std and the per-label mean shapes."""
        k = pca.components.shape[0]
        self.pca_components.zero_()[:k] = pca.components[: self.pca_components.shape[0]]
        self.pca_mean.copy_(pca.mean)
        self.mfcc_mean.copy_(mfcc_mean)
        self.mfcc_std.copy_(mfcc_std.clamp_min(1e-6))
        self.label_mean_shapes.copy_(label_means.view_as(self.label_mean_shapes))

    @property
    def pca(self) -> ShapePCA:
        return ShapePCA(self.pca_mean, self.pca_components)

    def mean_shape(self) -> torch.Tensor:
        """(P, 2) mean training mouth+jaw in crop units: the 'no audio, no face' prediction."""
        return (self.shape_mean if self.anchor == "neutral" else self.pca_mean).view(-1, 2)

    def start(self, anchor: Optional[torch.Tensor], n: int) -> torch.Tensor:
        """(n, P, 2) shapes the PCA's changes are added to: anchored, the (n, P, 2) neutral mouth+jaw in crop units
        where the neutral frame has a face, else (NaN rows, or `anchor` None) the mean shape; unanchored, zeros."""
        mean = self.mean_shape()
        if self.anchor != "neutral":
            return mean.new_zeros(n, *mean.shape)
        if anchor is None:
            return mean.expand(n, -1, -1)
        found = torch.isfinite(anchor).flatten(1).all(1).view(-1, 1, 1)
        return torch.where(found, anchor.float(), mean)

    def target(self, shapes: torch.Tensor, anchor: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, k) coefficients the network should predict for true (B, P, 2) shapes (crop units)."""
        return self.pca.encode(shapes - self.start(anchor, len(shapes)))

    def forward(self, mfcc: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """PCA coefficients (`target`'s) for MFCC windows and labels."""
        x = (mfcc - self.mfcc_mean) / self.mfcc_std
        if x.device.type == "cpu":  # oneDNN's bfloat16 LSTM needs AVX-512 (AVX2 CPUs raise): the LSTM runs in float32
            with torch.autocast("cpu", enabled=False):
                out, _ = self.lstm(x.float())
        else:
            out, _ = self.lstm(x)
        h = out[:, -1]
        if self.use_labels:
            h = torch.cat([h, F.one_hot(emotion, N_EMOTIONS).to(h.dtype), F.one_hot(level, N_LEVELS).to(h.dtype)], 1)
        return self.head(h)

    def predict_shape(self, mfcc: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor,
                      anchor: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, context, n_mfcc) MFCC windows + labels (+ neutral mouth+jaw, see `start`) -> (B, 37, 2) mouth+jaw
        landmarks in crop units."""
        return self.pca.decode(self.forward(mfcc, emotion, level).float()) + self.start(anchor, len(mfcc))


#: Input channels of the classifiers' trunk per `reference`.
_REFERENCE_CHANNELS = {"flow_only": 2, "flow": 5, "difference": 6, "stack": 6, "none": 3}


class FaceClassifier(nn.Module):
    """Emotion (8) and intensity (3) classifier on a face crop: a shared conv trunk with two heads. With a
    `reference` it also sees the same actor's neutral frame, so it judges the expression as a change from that
    person's neutral face rather than learning each training face (`classifiers.reference`): "flow_only" gives it the
    fine optical flow from the neutral frame to the frame alone (2 channels, no gradient to the images: see
    `image_gradient`), "flow" a medium-preset flow and the two frames' difference (5 channels),
    "difference" the difference and the frame (6), "stack" the two frames, "none" the frame alone (the paper's).
    True and False are "stack" and "none" (the hyperparameters of runs made before the choice).

    `features(x, neutral)` returns the trunk's activations, used as the perceptual-loss substitute when no VGG16
    weights are given (if they carry a gradient to the images).
    """

    def __init__(self, width: int = 16, reference: str | bool = "none"):
        super().__init__()
        w = width
        self.reference = {True: "stack", False: "none"}.get(reference, reference)
        if self.reference not in REFERENCE_INPUTS:
            raise ValueError(f"reference must be one of {REFERENCE_INPUTS}, not {reference!r}")
        self.trunk = nn.ModuleList(
            [_conv_block(_REFERENCE_CHANNELS[self.reference], w, 3, 2), _conv_block(w, 2 * w, 3, 2),
             _conv_block(2 * w, 4 * w, 3, 2), _conv_block(4 * w, 4 * w, 3, 2)]
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.emotion = nn.Linear(4 * w * 16, N_EMOTIONS)
        self.level = nn.Linear(4 * w * 16, N_LEVELS)

    def features(self, x: torch.Tensor, neutral: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's activations on faces `x` (B, 3, S, S) and their actors' neutral frames (read with a
        `reference` only)."""
        if self.reference == "stack":
            x = torch.cat([x, neutral], 1)
        elif self.reference == "difference":
            x = torch.cat([x - neutral, x], 1)
        elif self.reference == "flow_only":
            x = neutral_flow(x, neutral, "fine")
        elif self.reference == "flow":
            x = torch.cat([neutral_flow(x, neutral), x - neutral], 1)
        return self._trunk(x)

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.trunk:
            x = block(x)
            feats.append(x)
        return feats

    def _heads(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pool(feats[-1]).flatten(1)
        return self.emotion(h), self.level(h)

    @property
    def image_gradient(self) -> bool:
        """Whether a loss through the classifier reaches the images it reads (not through the flow alone)."""
        return self.reference != "flow_only"

    def forward(self, x: torch.Tensor, neutral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.features(x, neutral))

    def read_flow(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A flow-only classifier's (emotion, level) logits for a flow (B, 2, S, S) in its units, with a gradient:
        how a generator's own warp is scored where the optical flow of its images has none."""
        if self.image_gradient:
            raise ValueError(f"read_flow needs a flow-only classifier, not reference={self.reference!r}")
        return self._heads(self._trunk(flow))


def label_planes(emotion: torch.Tensor, level: torch.Tensor, size: int) -> torch.Tensor:
    """One-hot emotion (8) and intensity (3) tiled over a size x size image: (B, 11, S, S)."""
    onehot = torch.cat([F.one_hot(emotion, N_EMOTIONS), F.one_hot(level, N_LEVELS)], 1).float()
    return onehot[:, :, None, None].expand(-1, -1, size, size)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), _norm(ch), nn.ReLU(), nn.Conv2d(ch, ch, 3, 1, 1), _norm(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class NeutralToEmotion(nn.Module):
    """Encoder-decoder with residual blocks: neutral face + tiled emotion/intensity one-hots -> emotional face.

    Two stride-2 stages, residual blocks at 1/4 size, 3x3 convolutions throughout (the original's 7x7 ends
    cost 5x more on a CPU); the output is the neutral face changed in logit space. With `warp` the decoder also
    gives a flow field (up to `max_flow` of the half-crop) that moves the neutral face's pixels first: on aligned crops
    an expression is mostly a change of shape at the same places on every face, which carries to faces the few
    training actors do not show, where painted changes do not (flow starts at zero: the plain transform).
    """

    def __init__(self, width: int = 32, n_res: int = 4, warp: bool = False, max_flow: float = 0.1):
        super().__init__()
        w = width
        self.warp, self.max_flow = warp, max_flow
        self.encoder = nn.Sequential(
            _conv_block(3 + N_EMOTIONS + N_LEVELS, w), _conv_block(w, 2 * w, 4, 2), _conv_block(2 * w, 4 * w, 4, 2)
        )
        self.res = nn.Sequential(*[ResBlock(4 * w) for _ in range(n_res)])
        self.decoder = nn.Sequential(_up_block(4 * w, 2 * w), _up_block(2 * w, w), nn.Conv2d(w, 5 if warp else 3, 3, 1, 1))
        if warp:
            with torch.no_grad():
                self.decoder[-1].weight[3:].zero_(), self.decoder[-1].bias[3:].zero_()

    def transform(self, neutral: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The emotional face and, with `warp`, the flow that moved the neutral face: (B, S, S, 2) (x, y) offsets in
        grid_sample's units (2 = the crop side), where each output pixel reads the neutral face."""
        x = torch.cat([neutral, label_planes(emotion, level, neutral.shape[-1]).to(neutral.dtype)], 1)
        out = self.decoder(self.res(self.encoder(x)))
        base, flow = neutral, None
        if self.warp:
            b = len(neutral)
            eye = torch.eye(2, 3, device=neutral.device, dtype=out.dtype).expand(b, 2, 3)
            grid = F.affine_grid(eye, [b, 3, *neutral.shape[2:]], align_corners=False)
            flow = self.max_flow * torch.tanh(out[:, 3:].float()).permute(0, 2, 3, 1)
            base = F.grid_sample(neutral.float(), grid.float() + flow, padding_mode="border", align_corners=False).to(neutral.dtype)
        return _residual_image(base, out[:, :3]), flow

    def forward(self, neutral: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.transform(neutral, emotion, level)[0]


class RefineUNet(nn.Module):
    """U-Net refining the transformed face, guided by a lower-face landmark heatmap (the mouth for this frame)."""

    def __init__(self, width: int = 32, heatmap_channels: int = 1):
        super().__init__()
        w = width
        self.down = nn.ModuleList(
            [_conv_block(3 + heatmap_channels, w), _conv_block(w, 2 * w, 4, 2), _conv_block(2 * w, 4 * w, 4, 2), _conv_block(4 * w, 4 * w, 4, 2)]
        )
        self.up = nn.ModuleList([_up_block(4 * w, 4 * w), _up_block(8 * w, 2 * w), _up_block(4 * w, w)])
        self.out = nn.Conv2d(2 * w, 3, 3, 1, 1)

    def forward(self, face: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        x = torch.cat([face, heatmap.to(face.dtype)], 1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = torch.cat([block(x), skip], 1)
        return _residual_image(face, self.out(x))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (LSGAN targets 1 real / 0 fake) on a face plus its conditioning heatmap."""

    def __init__(self, width: int = 32, heatmap_channels: int = 1):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3 + heatmap_channels, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            _conv_block(w, 2 * w, 4, 2),
            _conv_block(2 * w, 4 * w, 4, 2),
            nn.Conv2d(4 * w, 1, 3, 1, 1),
        )

    def forward(self, face: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([face, heatmap.to(face.dtype)], 1))


#: torchvision's `vgg16().features` layout: conv channel counts, "M" = max-pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: Indices in `features` after which activations are taken (relu1_2, relu2_2, relu3_3, relu4_3).
VGG16_TAPS = (3, 8, 15, 22)


class VGG16Features(nn.Module):
    """VGG16's convolutional part with torchvision's layer indices, so its `features.*` weights load as is."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[: VGG16_TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x_rgb: torch.Tensor) -> list[torch.Tensor]:
        """Activations at VGG16_TAPS for RGB images in [-1, 1]."""
        x = ((x_rgb + 1) / 2 - self.mean) / self.std
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                feats.append(x)
        return feats
