"""The seed paper's convolutional encoder-decoder for diffraction inversion (Fig. 3, right)."""

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
