"""A small CNN exercising the spine: padded conv, stride-2 conv, ReLU, Flatten, Linear."""
import torch.nn as nn


class TinyCNN(nn.Module):
    input_shape = (2, 3, 9, 9)

    def __init__(self, in_ch: int = 3, classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(in_ch, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(12 * 5 * 5, classes)

    def forward(self, x):
        x = self.relu(self.c1(x))
        x = self.relu(self.c2(x))
        return self.fc(self.flat(x))
