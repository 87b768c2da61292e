"""Built-in models: ordinary nn.Modules a user can also train in PyTorch."""
from .ad_autoencoder import ADAutoencoder
from .dscnn import DSCNN
from .mobilenet_vww import MobileNetV1VWW
from .resnet8 import ResNet8
from .tiny import TinyCNN

BUILTIN = {
    "resnet8": ResNet8,
    "dscnn": DSCNN,
    "tinycnn": TinyCNN,
    "mobilenetv1_vww": MobileNetV1VWW,
    "ad_autoencoder": ADAutoencoder,
}
