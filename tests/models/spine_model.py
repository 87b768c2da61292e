"""A user model file: padded conv, stride-2 conv, ReLU, Flatten, Linear (odd sizes on purpose)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SpineNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 10, 3, stride=2, padding=1)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.flatten(x, 1)
        return self.fc(x)


class FFTNet(nn.Module):
    """Uses an op odl has no kernel for."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.fft.fft2(self.c1(x)).real.flatten(1)
