"""A small MLP for flat N x 30 tabular data (scikit-learn's breast-cancer set saved as an npz): odl train's
--qat int8 measurement on an npz beside float training (docs/training.md)."""
import torch.nn as nn


class TabularMLP(nn.Module):
    def __init__(self, features: int = 30, classes: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(features, 32)
        self.fc2 = nn.Linear(32, 16)
        self.fc3 = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc3(nn.functional.relu(self.fc2(nn.functional.relu(self.fc1(x)))))
