"""User model files combining the supported ops, with awkward sizes on purpose (odd/prime sizes, stride 2 on odd
inputs, channels not divisible by 8, 1x1 spatial, batches of 3-4)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNStack(nn.Module):
    """conv/BN/ReLU stack, 'same' padding with an even kernel (asymmetric), bias-free convs."""
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
            nn.Conv2d(5, 7, (4, 2), padding="same", bias=False), nn.BatchNorm2d(7), nn.ReLU(),
            nn.Conv2d(7, 11, 3, stride=2), nn.BatchNorm2d(11), nn.ReLU(),
        )
        self.head = nn.Linear(11 * 3 * 3, 4)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class GatherConvs(nn.Module):
    """The memory hierarchy's DMA-gathered convs: an unpadded stride-1 conv (its input gradient computed as a conv
    of dY whose output is larger than dY), a stride-2 conv on an odd input whose gathers move single elements, a
    non-square kernel with asymmetric padding, channel counts prime to the core count; input 2x3x21x19."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 5, 3, padding=1)
        self.b1 = nn.BatchNorm2d(5)
        self.c2 = nn.Conv2d(5, 6, 3)                       # 21x19 -> 19x17
        self.b2 = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(6, 7, 3, stride=2, padding=1)  # -> 10x9: 9 outputs a row, gathered element by element
        self.c4 = nn.Conv2d(7, 4, (3, 2), padding=(1, 0), bias=False)   # -> 10x8
        self.fc = nn.Linear(4 * 10 * 8, 5)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        x = F.relu(self.c3(x))
        return self.fc(torch.flatten(self.c4(x), 1))


class DepthwiseSeparable(nn.Module):
    """depthwise (stride 1 and stride 2) + pointwise convs, ReLU6, global average pooling."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 13, 3, padding=1)
        self.dw1 = nn.Conv2d(13, 13, 3, padding=1, groups=13)
        self.bn1 = nn.BatchNorm2d(13)
        self.pw1 = nn.Conv2d(13, 9, 1)
        self.dw2 = nn.Conv2d(9, 9, 3, stride=2, padding=1, groups=9, bias=False)
        self.pw2 = nn.Conv2d(9, 10, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        x = F.relu6(self.stem(x))
        x = F.relu6(self.pw1(F.relu6(self.bn1(self.dw1(x)))))
        x = F.relu6(self.pw2(self.dw2(x)))
        return self.fc(self.pool(x).flatten(1))


class ResidualPool(nn.Module):
    """residual blocks (identity and strided 1x1 projection), max and average pooling, a value used twice."""
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool0 = nn.MaxPool2d(3, stride=2, padding=1)
        self.a1 = nn.Conv2d(6, 6, 3, padding=1)
        self.a2 = nn.Conv2d(6, 6, 3, padding=1)
        self.b1 = nn.Conv2d(6, 10, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.proj = nn.Conv2d(6, 10, 1, stride=2)
        self.avg = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        x = self.pool0(F.relu(self.c0(x)))
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        y = self.bn(self.b1(x)) + self.proj(x)
        y = F.max_pool2d(F.relu(y), 2, stride=1)
        return self.fc(torch.flatten(self.avg(y), 1))


class MLP(nn.Module):
    """multi-layer perceptron with dropout on flat [N, features] input."""
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(23, 17), nn.ReLU(), nn.Dropout(0.3), nn.Linear(17, 11), nn.ReLU(),
                                 nn.Linear(11, 3))

    def forward(self, x):
        return self.net(x)


def tiny_spatial():
    """A function returning a model: 1x1 spatial after a strided conv, frozen-able BN, and a bias-free linear."""
    return nn.Sequential(nn.Conv2d(4, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8, 6, bias=False))


class NameClash(nn.Module):
    """Module paths whose C names collide ('a.b' and 'a_b'), reached through a nested module."""
    def __init__(self):
        super().__init__()
        self.a = nn.Module()
        self.a.b = nn.Linear(6, 5)
        self.a_b = nn.Linear(5, 3)

    def forward(self, x):
        return self.a_b(F.relu(self.a.b(x)))


class ConvBiasBN1d(nn.Module):
    """A conv with a bias whose output, flattened, goes through a BatchNorm1d over all C*H*W features (issue 25):
    the conv bias gradient is 0 in exact arithmetic, a sum over N*H*W that cancels; input 4x3x16x16."""
    def __init__(self, c=16, hw=16):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm1d(c * hw * hw)
        self.fc = nn.Linear(c * hw * hw, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(torch.flatten(self.conv(x), 1))))
