"""The MLPerf Tiny anomaly-detection autoencoder (ToyADMOS machine sounds; 5 frames x 128 log-mel bins = 640
inputs): 640 -> 128 x4 -> 8 -> 128 x4 -> 640, each hidden layer Linear + BatchNorm1d + ReLU as in the Keras
reference, trained to reconstruct its input with the MSE loss (its default). BatchNorm1d in training mode needs
more than one sample per channel, so the default batch is 8 (PyTorch refuses batch statistics over one value)."""
import torch.nn as nn


def _block(fin: int, fout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(fin, fout), nn.BatchNorm1d(fout), nn.ReLU())


class ADAutoencoder(nn.Module):
    input_shape = (8, 640)
    default_loss = "mse"

    def __init__(self, inputs: int = 640, hidden: int = 128, code: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(_block(inputs, hidden), _block(hidden, hidden), _block(hidden, hidden),
                                     _block(hidden, hidden), _block(hidden, code))
        self.decoder = nn.Sequential(_block(code, hidden), _block(hidden, hidden), _block(hidden, hidden),
                                     _block(hidden, hidden))
        self.out = nn.Linear(hidden, inputs)

    def forward(self, x):
        return self.out(self.decoder(self.encoder(x)))
