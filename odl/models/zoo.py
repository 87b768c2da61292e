"""MCU-class networks of timm and torchvision, built with random initialisation (no weights are downloaded) and
10 classes: `odl validate timm:mobilenetv3_small_050`, `torchvision:mobilenet_v2` (width 0.35), ...

torchvision's registry wheels are CUDA builds; installed with --no-deps beside odl's CPU torch, `import
torchvision` fails on its compiled ops ("operator torchvision::nms does not exist": two fake-kernel registrations
are not guarded). Defining those two schemas first (ensure_torchvision) lets the pure-Python model definitions
load; timm imports torchvision, so it needs the same."""
from __future__ import annotations

from odl.common.errors import OdlError

_LIB = None
NUM_CLASSES = 10
DEFAULT_SHAPE = (2, 3, 32, 32)   # batch 2: batch norm in training mode needs more than one value per channel


def ensure_torchvision():
    """Define torchvision::nms / qnms when torchvision's compiled ops cannot load, then import torchvision."""
    global _LIB
    import importlib
    import torch
    try:
        importlib.import_module("torchvision")
        return
    except Exception:
        pass
    if _LIB is None:
        try:
            torch.ops.torchvision.nms   # already there (a torchvision whose compiled ops load)
        except (AttributeError, RuntimeError):
            _LIB = torch.library.Library("torchvision", "DEF")
            _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import sys
    for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
        del sys.modules[k]        # a failed first import leaves half-initialised modules behind
    try:
        importlib.import_module("torchvision")
    except Exception as e:
        raise OdlError(f"torchvision cannot be imported ({type(e).__name__}: {str(e).splitlines()[0]}); install "
                       f"it as scripts/setup.sh does (pip install --no-deps torchvision==0.29.1)") from None


def _timm(name, **kw):
    def build():
        ensure_torchvision()
        try:
            import timm
        except ImportError:
            raise OdlError("timm is not installed (scripts/setup.sh installs it: pip install --no-deps timm)") from None
        return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kw)
    return build


def _tv(name, **kw):
    def build():
        ensure_torchvision()
        import torchvision.models as tvm
        return getattr(tvm, name)(weights=None, num_classes=NUM_CLASSES, **kw)
    return build


# the MCU-class set (every entry random init, 10 classes)
ZOO = {
    "timm:lcnet_035": _timm("lcnet_035"),
    "timm:mobilenetv3_small_050": _timm("mobilenetv3_small_050"),
    "timm:ghostnet_050": _timm("ghostnet_050"),
    "torchvision:mobilenet_v3_small": _tv("mobilenet_v3_small"),
    "torchvision:mobilenet_v2": _tv("mobilenet_v2", width_mult=0.35),
    "torchvision:mnasnet0_5": _tv("mnasnet0_5"),
    "torchvision:shufflenet_v2_x0_5": _tv("shufflenet_v2_x0_5"),
    "torchvision:squeezenet1_1": _tv("squeezenet1_1"),
}


def is_zoo(spec: str) -> bool:
    return spec.startswith(("timm:", "torchvision:"))


def build(spec: str):
    """A zoo model by name ('timm:lcnet_035'); other timm names work too ('timm:<any timm model>')."""
    fn = ZOO.get(spec)
    if fn is None:
        kind, _, name = spec.partition(":")
        fn = _timm(name) if kind == "timm" else None
        if fn is None:
            raise OdlError(f"unknown model '{spec}': the torchvision models odl knows are "
                           f"{', '.join(k for k in ZOO if k.startswith('torchvision:'))}")
    try:
        model = fn()
    except OdlError:
        raise
    except Exception as e:
        raise OdlError(f"'{spec}' could not be built: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    model.input_shape = DEFAULT_SHAPE
    return model
