import torch.nn as nn


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, dilation=2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.c(x).flatten(1))


class ReflectPadConv(nn.Module):
    """a layer setting odl refuses (dilation, the earlier example here, is supported now)"""
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.c(x).flatten(1))
