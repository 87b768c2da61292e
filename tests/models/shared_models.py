"""Weight sharing: a module called more than once, and one parameter owned by two modules. Every use must add to
the parameter's gradient (PyTorch accumulates over all uses)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SharedTwice(nn.Module):
    """A conv applied twice in a row and a linear layer applied twice, with other layers in between."""
    input_shape = (2, 3, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 5, 3, padding=1)
        self.shared = nn.Conv2d(5, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 4 * 4, 9)
        self.mid = nn.Linear(9, 9)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.shared(x))
        x = self.shared(self.bn(x))
        x = F.avg_pool2d(F.relu(self.bn(x)), 2)   # the batch norm again: statistics and running stats twice
        x = self.fc(torch.flatten(x, 1))
        return self.mid(F.relu(self.mid(x)))


class TiedModules(nn.Module):
    """Two Linear modules holding the same weight Parameter (weight tying)."""
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(11, 11)
        self.b = nn.Linear(11, 11, bias=False)
        self.b.weight = self.a.weight
        self.head = nn.Linear(11, 4)

    def forward(self, x):
        h = F.relu(self.a(x))
        h = self.b(h)
        return self.head(F.relu(h))
