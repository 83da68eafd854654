"""Networks for diffraction inversion: the seed paper's encoder-decoder (the reference) and a
U-Net with what the field adds (skip connections, a non-negative output inside a support),
plus `pattern_loss`, the loss on the log pattern of a predicted shape."""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (8, 16, 32, 64)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(cin: int, cout: int, last: bool = False) -> nn.Module:
    conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=last)
    return conv if last else nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EncoderDecoder(nn.Module):
    """Encoder of four 3x3 convolutions (8, 16, 32, 64 kernels, stride 2), each followed by
    batch normalisation and ReLU; a mirrored decoder of 3x3 transposed convolutions
    (64 -> 32 -> 16 -> 8 -> 1), the last one linear.

    Maps a (N, 1, H, W) diffraction pattern to a (N, 1, H, W) shape; sizes that are not
    multiples of 16 are decoded to the next multiple and cropped.
    """

    def __init__(self, channels=CHANNELS, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        widths = (in_channels, *channels)
        self.encoder = nn.Sequential(*[_down(a, b) for a, b in zip(widths[:-1], widths[1:])])
        back = tuple(reversed(channels))
        ups = [_up(a, b) for a, b in zip(back[:-1], back[1:])] + [_up(back[-1], out_channels, last=True)]
        self.decoder = nn.Sequential(*ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.decoder(self.encoder(x))[..., :h, :w]


def _block(cin: int, cout: int) -> nn.Sequential:
    # one convolution per level, not the usual two: half the cost, for CPU training
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net: a 3x3 convolution per level, max-pool down, transposed convolution up,
    and a skip connection from each encoder level to its decoder level.

    The output is non-negative (softplus: electron counts) and, if a ``support`` mask is
    given, zero outside it: the support constraint of phase retrieval, built in.

    Parameters
    ----------
    channels : tuple of int
        Widths of the levels; the image side must be divisible by ``2 ** (len(channels) - 1)``.
    support : tensor (H, W), optional
        Where the object may be (1) or not (0).
    """

    def __init__(self, channels=(8, 16, 32, 64), support: torch.Tensor | None = None):
        super().__init__()
        self.down = nn.ModuleList([_block(a, b) for a, b in zip((1, *channels[:-1]), channels)])
        back = tuple(reversed(channels))
        self.up = nn.ModuleList([nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in zip(back[:-1], back[1:])])
        self.merge = nn.ModuleList([_block(2 * b, b) for b in back[1:]])
        self.head = nn.Conv2d(channels[0], 1, 1)
        self.register_buffer("support", None if support is None else support.float()[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        y = nn.functional.softplus(self.head(x))
        return y if self.support is None else y * self.support


def log_pattern(shape: torch.Tensor) -> torch.Tensor:
    """``log1p(fftshift(|FFT2(shape)|^2))`` of a batch of shapes (..., H, W), differentiable."""
    f = torch.fft.fftshift(torch.fft.fft2(shape), dim=(-2, -1))
    return torch.log1p(f.real ** 2 + f.imag ** 2)


def pattern_loss(prediction: torch.Tensor, x: torch.Tensor, scale: float, mean: float,
                 std: float) -> torch.Tensor:
    """Mean squared difference between the normalised log pattern of the predicted shape and
    the input: is the prediction consistent with what was measured?

    ``scale`` turns the predicted (scaled) shape back into electrons; ``mean`` and ``std``
    normalise its log pattern as the input was (`molmnist_dask.ml.Stats`).
    """
    predicted = (log_pattern(prediction * scale) - mean) / std
    return nn.functional.mse_loss(predicted, x)
