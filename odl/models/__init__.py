"""Built-in models: ordinary nn.Modules a user can also train in PyTorch."""
from .tiny import TinyCNN

BUILTIN = {
    "tinycnn": TinyCNN,
}
