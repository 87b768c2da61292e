"""Built-in models: ordinary nn.Modules a user can also train in PyTorch."""
from .ad_autoencoder import ADAutoencoder
from .dscnn import DSCNN
from .resnet8 import ResNet8
from .tiny import TinyCNN

BUILTIN = {
    "resnet8": ResNet8,
    "dscnn": DSCNN,
    "tinycnn": TinyCNN,
    "ad_autoencoder": ADAutoencoder,
}
