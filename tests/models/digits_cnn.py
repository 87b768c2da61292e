"""A small user CNN for scikit-learn's 8x8 digits (N x 1 x 8 x 8): two conv-BN-ReLU blocks each followed by 2x2 max pooling, linear.
odl train's done-when model (README: `odl train tests/models/digits_cnn.py:DigitsCNN --data digits`)."""
import torch.nn as nn


class DigitsCNN(nn.Module):
    input_shape = (16, 1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(nn.functional.relu(self.bn1(self.conv1(x))))
        x = nn.functional.relu(self.bn2(self.conv2(x)))
        x = self.pool(x)
        return self.fc(x.flatten(1))


class TinyDigits(nn.Module):
    """A smaller one for fast tests: conv-BN-ReLU, pooling, linear."""
    input_shape = (16, 1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.pool(nn.functional.relu(self.bn(self.conv(x)))).flatten(1))


class DigitsMLP(nn.Module):
    """Flat N x 64 inputs (npz with N,F arrays)."""
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x)))
