"""User models for the spatial and normalisation ops (Conv1d, dilation, groups, 1-D / adaptive / ceil-mode
pooling, LayerNorm / GroupNorm / InstanceNorm2d, Upsample / interpolate, ConvTranspose2d), one per op family,
with awkward sizes on purpose: odd lengths, stride 2 on odd inputs, channels not divisible by 8, batches > 1."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvFamily1d(nn.Module):
    """Keyword-spotting style Conv1d over [N, C, L]: strided, grouped + dilated, depthwise, pointwise; and a
    grouped, dilated Conv2d."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(6, 12, 5, stride=2, padding=2)
        self.c2 = nn.Conv1d(12, 9, 3, padding="same", dilation=2, groups=3, bias=False)
        self.c3 = nn.Conv1d(9, 9, 3, padding=1, groups=9)
        self.c4 = nn.Conv1d(9, 10, 1)
        self.fc = nn.Linear(10 * 7, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.relu(self.c3(x))
        x = self.c4(x)
        return self.fc(torch.flatten(x, 1))


class ConvFamily2d(nn.Module):
    """Conv2d with dilation (asymmetric), groups = 2 with stride 2 on an odd input, a dilated depthwise conv."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 6, 3, padding=(2, 1), dilation=(2, 1))
        self.c2 = nn.Conv2d(6, 10, 3, stride=2, groups=2, padding=1)
        self.c3 = nn.Conv2d(10, 10, 3, padding=2, dilation=2, groups=10, bias=False)
        self.fc = nn.Linear(10 * 4 * 5, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = self.c3(x)
        return self.fc(torch.flatten(x, 1))


class PoolFamily(nn.Module):
    """1-D max / avg pooling (stride 2 on an odd length, ceil_mode), AdaptiveAvgPool1d to a non-dividing size,
    ceil_mode MaxPool2d / AvgPool2d (count_include_pad both ways), AdaptiveAvgPool2d to 3x2 (overlapping
    windows on one axis, evenly dividing on the other), the functional 1-D forms. Input [N, 3, 7, 7]."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 5, 3, padding=1)
        self.mp1 = nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)
        self.ap1 = nn.AvgPool1d(2, stride=2, ceil_mode=True)
        self.ad1 = nn.AdaptiveAvgPool1d(3)
        self.c2 = nn.Conv2d(3, 5, 3, padding=1)
        self.mp2 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.ap2 = nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=True)  # last window passes the edge
        self.ap3 = nn.AvgPool2d(2, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.ad2 = nn.AdaptiveAvgPool2d((3, 2))
        self.fa = nn.Linear(5 * 3, 3)
        self.fb = nn.Linear(5 * 3 * 2, 3)

    def forward(self, x):
        a = F.relu(self.c1(torch.flatten(x, 2)))       # [N, 5, 49]
        a = self.ad1(self.ap1(self.mp1(a)))             # 49 -> 25 -> 13 -> 3
        a = a + F.adaptive_avg_pool1d(F.avg_pool1d(F.max_pool1d(a, 2, 1, ceil_mode=True), 1), 3)  # functional
        b = F.relu(self.c2(x))                          # [N, 5, 7, 7]
        b1 = self.ad2(self.mp2(b))                      # 7 -> 4 -> 3x2
        b2 = self.ad2(self.ap3(self.ap2(b)))            # 7 -> 4 -> 3 -> 3x2 (3x3 -> 3x2: overlapping columns)
        return self.fa(torch.flatten(a, 1)) + self.fb(torch.flatten(b1 + b2, 1))


class NormFamily(nn.Module):
    """GroupNorm (3 groups of 2 channels, affine), InstanceNorm2d with and without affine, LayerNorm over the last
    dim and over [C, H, W]; F.group_norm / F.layer_norm without affine. Input [N, 3, 5, 7]."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.gn = nn.GroupNorm(3, 6)
        self.c2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.in1 = nn.InstanceNorm2d(5, affine=True)
        self.in2 = nn.InstanceNorm2d(5)
        self.ln1 = nn.LayerNorm(4)
        self.ln2 = nn.LayerNorm([5, 3, 4])
        self.fc = nn.Linear(5 * 3 * 4, 3)

    def forward(self, x):
        x = F.relu(self.gn(self.c1(x)))
        x = self.c2(x)                                   # [N, 5, 3, 4]
        x = F.relu(self.in1(x)) + self.in2(x)
        x = self.ln2(F.relu(self.ln1(x)))
        x = F.group_norm(x, 5) + F.layer_norm(x, (3, 4))                 # functional forms, no affine
        return self.fc(torch.flatten(x, 1))


class UpsampleFamily(nn.Module):
    """Upsample nearest (scale factor 2, and to a size that is not a multiple), bilinear with align_corners False
    (scale 1.5) and True (to a size), linear 1-D, ConvTranspose2d (stride 2, padding 1, output_padding 1, and a
    dilated one). Input [N, 3, 5, 4]."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 5, 3, padding=1)
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")                      # 5x4 -> 10x8
        self.t1 = nn.ConvTranspose2d(5, 4, 3, stride=2, padding=1, output_padding=1)  # -> 20x16
        self.c2 = nn.Conv2d(4, 3, 3, stride=2)                                        # -> 9x7
        self.t2 = nn.ConvTranspose2d(3, 6, 2, dilation=2, bias=False)                 # -> 11x9
        self.fa = nn.Linear(6 * 3 * 5, 3)
        self.fb = nn.Linear(6 * 9, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.t1(self.up1(x)))
        x = F.relu(self.c2(x))
        x = self.t2(x)                                                       # [N, 6, 11, 9]
        a = F.interpolate(x, scale_factor=1.5, mode="bilinear")              # 16x13
        a = F.interpolate(a, size=(3, 5), mode="bilinear", align_corners=True)
        b = F.interpolate(x, size=(4, 7), mode="nearest")                    # [N, 6, 4, 7]
        b = F.interpolate(torch.flatten(b, 2), size=9, mode="linear")        # 28 -> 9
        return self.fa(torch.flatten(a, 1)) + self.fb(torch.flatten(b, 1))


class KWSConv1d(nn.Module):
    """Keyword spotting written the common 1-D way: MFCC coefficients as channels over frames, [N, 10, 49];
    a strided stem, four depthwise-separable Conv1d blocks, global average pooling, 12 classes."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(10, 64, 5, stride=2, padding=2)
        self.dw = nn.ModuleList([nn.Conv1d(64, 64, 3, padding=1, groups=64) for _ in range(4)])
        self.pw = nn.ModuleList([nn.Conv1d(64, 64, 1) for _ in range(4)])
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(64, 12)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for dw, pw in zip(self.dw, self.pw):
            x = F.relu(pw(F.relu(dw(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
