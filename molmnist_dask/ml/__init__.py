"""Machine learning on molmnist datasets with PyTorch (the optional ``ml`` extra).

    pip install 'molmnist-dask[ml]'

    from torch.utils.data import DataLoader
    from molmnist_dask.ml import DiffractionDataset
    train = DiffractionDataset("molecular-mnist", split="train", by="variant")
    test = DiffractionDataset("molecular-mnist", split="test", by="variant", stats=train.stats)
    loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=2)

Modules: `data` (the Dataset, its splits and transforms), `models` (the paper's
encoder-decoder), `metrics` (MSE and SSIM).
"""

try:
    import torch  # noqa: F401
except ImportError as err:  # torch is optional: say which extra brings it
    raise ImportError("molmnist_dask.ml needs PyTorch: pip install 'molmnist-dask[ml]'") from err

from .data import DiffractionDataset, Stats, area_resample, center_crop, split_items
from .metrics import mse, ssim
from .models import EncoderDecoder

__all__ = ["DiffractionDataset", "Stats", "split_items", "area_resample", "center_crop",
           "EncoderDecoder", "mse", "ssim"]
