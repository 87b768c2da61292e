"""Data functions for `odl train --data tests/models/digits_data.py:fn` (tests)."""
import torch
from sklearn.datasets import load_digits


class DigitsDataset(torch.utils.data.Dataset):
    def __init__(self, n=160):
        d = load_digits()
        self.x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1)
        self.y = torch.tensor(d.target[:n], dtype=torch.int64)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def dataset():
    return DigitsDataset()


def tensors():
    ds = DigitsDataset()
    return ds.x, ds.y
