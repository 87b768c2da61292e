"""Built-in models: ordinary nn.Modules a user can also train in PyTorch."""
from odl.models.ad_autoencoder import ADAutoencoder
from odl.models.dscnn import DSCNN
from odl.models.mobilenet_vww import MobileNetV1VWW
from odl.models.resnet8 import ResNet8
from odl.models.tiny import TinyCNN

BUILTIN = {
    "resnet8": ResNet8,
    "dscnn": DSCNN,
    "tinycnn": TinyCNN,
    "mobilenetv1_vww": MobileNetV1VWW,
    "ad_autoencoder": ADAutoencoder,
}
