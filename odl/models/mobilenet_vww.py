"""MobileNetV1 of MLPerf Tiny Visual Wake Words (width multiplier 0.25, 3x96x96 input, 2 classes): a 3x3 stride-2
convolution with 8 channels, 13 depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, each followed by batch
norm and ReLU; stride 2 in blocks 2, 4, 6 and 12), global average pooling, a linear classifier. Convolutions
followed by batch norm carry no bias, as in the reference. Padding is PyTorch's symmetric 1 (Keras 'same' pads
stride-2 layers on the bottom/right only; the shapes are the same)."""
import torch.nn as nn

# (output channels at width 1.0, stride of the depthwise conv) for the 13 blocks
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _conv_bn(cin, cout, k, stride, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class DSBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = _conv_bn(cin, cin, 3, stride, groups=cin)
        self.pw = _conv_bn(cin, cout, 1, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class MobileNetV1VWW(nn.Module):
    input_shape = (1, 3, 96, 96)

    def __init__(self, classes: int = 2, alpha: float = 0.25):
        super().__init__()
        ch = int(32 * alpha)
        self.stem = _conv_bn(3, ch, 3, 2)
        blocks = []
        for c, s in _BLOCKS:
            blocks.append(DSBlock(ch, int(c * alpha), s))
            ch = int(c * alpha)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
