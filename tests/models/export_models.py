"""Models written as real code is (timm / torchvision style), for the torch.export frontend: functional layers
using their own parameters, static shape checks, squeeze-excitation gates, hard-swish / hard-sigmoid, clamp,
channel slicing, split, concatenation and shuffle, mean over dims, view(x.size(0), -1)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BNAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: F.batch_norm with the module's own parameters and buffers, a shape check, an act."""
    def __init__(self, c, act):
        super().__init__(c)
        self.act = act

    def forward(self, x):
        torch._assert(x.shape[1] == self.num_features, "channels")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return self.act(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, r, 1)
        self.conv_expand = nn.Conv2d(r, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(F.relu(self.conv_reduce(s)))
        return x * self.gate(s)


class GhostLike(nn.Module):
    """GhostNet's module: a primary conv, a cheap depthwise conv on it, both concatenated, sliced back."""
    def __init__(self, cin, cout):
        super().__init__()
        self.primary = nn.Conv2d(cin, 4, 1, bias=False)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.cout = cout

    def forward(self, x):
        a = self.primary(x)
        b = self.cheap(a)
        return torch.cat([a, b], dim=1)[:, :self.cout]


class RealCode(nn.Module):
    input_shape = (2, 3, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=False)
        self.bn1 = BNAct(8, nn.Hardswish())
        self.se = SqueezeExcite(8, 4)
        self.ghost = GhostLike(8, 6)
        self.bn2 = BNAct(6, nn.ReLU6())
        self.fc_w = nn.Parameter(torch.randn(10, 5 * 16) * 0.2)
        self.fc_b = nn.Parameter(torch.zeros(10))
        self.lin = nn.Linear(10, 5)

    def forward(self, x):
        x = self.bn1(self.stem(x))
        x = self.se(x)
        x = self.ghost(x)
        n, c, h, w = x.shape                       # ShuffleNet's channel shuffle (2 groups)
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = self.bn2(x)
        a, b = torch.split(x, [2, 4], dim=1)
        x = torch.cat([torch.clamp(a, -0.5, 1.5) * 0.5, 2.0 - b[:, 1:4] / 3], dim=1)
        x = F.avg_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        x = F.hardswish(F.linear(x, self.fc_w, self.fc_b))
        return self.lin(x)


class Unsupported(nn.Module):
    """Two ops odl has no op for, on two lines, and a parameter used as a multiplier."""
    input_shape = (2, 3, 4, 4)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x):
        x = self.conv(x)
        x = torch.abs(x)
        x = x * self.scale
        x = torch.cumsum(x, dim=1)
        return x.flatten(1)
