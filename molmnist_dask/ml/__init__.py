"""Machine learning on molmnist datasets with PyTorch (the optional ``ml`` extra).

    pip install 'molmnist-dask[ml]'

    from torch.utils.data import DataLoader
    from molmnist_dask.ml import DiffractionDataset
    train = DiffractionDataset("molecular-mnist", split="train", size=64)
    test = DiffractionDataset("molecular-mnist", split="test", size=64, stats=train.stats)
    loader = train.loader(batch_size=64, shuffle=True)     # batch reads, no collation copy

Modules: `data` (the Dataset and its batch reads), `splits` (held-out variant ranges or
molecules), `transforms`, `stats` (training statistics, cached beside the store), `reader`
(part files, each open once per process), `chunks` (images read as HDF5 chunks), `models`
(the paper's encoder-decoder, a U-Net), `metrics` (MSE and SSIM).
"""

try:
    import torch  # noqa: F401
except ImportError as err:  # torch is optional: say which extra brings it
    raise ImportError("molmnist_dask.ml needs PyTorch: pip install 'molmnist-dask[ml]'") from err

from .data import DiffractionDataset, collate
from .metrics import mse, ssim
from .models import EncoderDecoder, UNet
from .splits import split_items
from .stats import Stats
from .transforms import area_resample, center_crop

__all__ = ["DiffractionDataset", "collate", "Stats", "split_items", "area_resample", "center_crop",
           "EncoderDecoder", "UNet", "mse", "ssim"]
