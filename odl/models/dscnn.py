"""DS-CNN of MLPerf Tiny keyword spotting (49x10 MFCC input, 12 classes): a 10x4 stride-2 convolution with 64
channels ('same' padding as in the Keras reference: 4 rows top, 5 bottom, 1 column each side), four
depthwise-separable blocks, dropout, global average pooling, a linear classifier."""
import torch.nn as nn


class DSBlock(nn.Module):
    def __init__(self, ch: int = 64):
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, padding=1, groups=ch)
        self.bn1 = nn.BatchNorm2d(ch)
        self.relu1 = nn.ReLU()
        self.pw = nn.Conv2d(ch, ch, 1)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.pw(self.relu1(self.bn1(self.dw(x))))))


class DSCNN(nn.Module):
    input_shape = (1, 1, 49, 10)

    def __init__(self, classes: int = 12, ch: int = 64):
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 1, 4, 5))   # left, right, top, bottom
        self.conv1 = nn.Conv2d(1, ch, (10, 4), stride=2)
        self.bn1 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()
        self.drop1 = nn.Dropout(0.2)
        self.blocks = nn.Sequential(*[DSBlock(ch) for _ in range(4)])
        self.drop2 = nn.Dropout(0.4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, classes)

    def forward(self, x):
        x = self.drop1(self.relu(self.bn1(self.conv1(self.pad(x)))))
        x = self.drop2(self.blocks(x))
        return self.fc(self.pool(x).flatten(1))
