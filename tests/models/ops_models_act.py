"""User models for the activation / reduction / concatenation / softmax / loss ops, awkward sizes on purpose (odd and
prime sizes, batches of 2-3, stride 2 on odd input, channels not divisible by 8)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ActMLP(nn.Module):
    """Every smooth activation on a flat [N, features] input: modules and functional calls."""
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(17, 13)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(13, 11)
        self.fc3 = nn.Linear(11, 9)
        self.leaky = nn.LeakyReLU(0.2)
        self.fc4 = nn.Linear(9, 7)
        self.fc5 = nn.Linear(7, 5)

    def forward(self, x):
        x = torch.tanh(self.fc2(self.gelu(self.fc1(x))))
        x = F.elu(self.fc4(self.leaky(self.fc3(x))), alpha=0.7)
        return torch.sigmoid(self.fc5(x))


class ActConv(nn.Module):
    """Hardswish, SiLU, Hardsigmoid, tanh-form GELU between convolutions (stride 2 on odd input), batch norm, and a
    mean over the spatial dims as the global pooling."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.Hardswish()
        self.c2 = nn.Conv2d(6, 5, 3, stride=2)
        self.bn = nn.BatchNorm2d(5)
        self.c3 = nn.Conv2d(5, 7, 1)
        self.fc = nn.Linear(7, 4)

    def forward(self, x):
        x = self.act1(self.c1(x))
        x = F.silu(self.bn(self.c2(x)))
        x = F.gelu(self.c3(x), approximate="tanh")
        return self.fc(x.mean(dim=(2, 3)))


class CatSoftmax(nn.Module):
    """torch.cat on channels, torch.stack on a new dim, sum and mean over one dim, nn.Identity, a softmax inside the
    model, and log_softmax at the end (trained with the NLL loss)."""
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 3, 3, padding=1)
        self.b = nn.Conv2d(4, 2, 3, padding=1)
        self.fc1 = nn.Linear(5 * 2 * 5, 9)
        self.ident = nn.Identity()
        self.fc2 = nn.Linear(9, 6)

    def forward(self, x):
        c = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)          # [N, 5, 5, 7]
        s = torch.stack([c.mean(3), c.sum(dim=-1)], dim=2)           # [N, 5, 2, 5]
        h = F.softmax(self.fc1(s.flatten(1)), dim=-1)
        return F.log_softmax(self.fc2(self.ident(h)), dim=1)


class BN1dMLP(nn.Module):
    """BatchNorm1d on [N, C, L] and on [N, C], Hardsigmoid; trained with BCE-with-logits."""
    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm1d(5)
        self.fc1 = nn.Linear(5 * 11, 12)
        self.bn1 = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 6)

    def forward(self, x):
        x = torch.flatten(self.bn0(x), 1)
        return self.fc2(F.hardsigmoid(self.bn1(self.fc1(x))))
