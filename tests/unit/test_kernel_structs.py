"""The kernels' argument structs have one source, odl_kernels.h: the host's ctypes layouts and the tiler's pointer
fields are read from it."""
import ctypes

from odl.ir import kernels
from odl.ir.kernel_structs import ctypes_struct, pointer_fields, structs


def test_every_registered_kernel_has_its_struct():
    names = structs()
    missing = sorted({k.args_type for k in kernels.REGISTRY.values()} - set(names))
    assert not missing and len(kernels.REGISTRY) > 40


def test_fields_as_declared():
    mm = ctypes_struct("odl_mm_args_t")
    assert [f for f, _ in mm._fields_] == ["a", "b", "c", "m", "n", "k", "accumulate", "lda", "ldb", "ldc", "ct",
                                           "bias", "plan"]
    assert dict(mm._fields_)["bias"] is ctypes.c_void_p and dict(mm._fields_)["m"] is ctypes.c_int
    drop = dict(ctypes_struct("odl_dropout_fwd_args_t")._fields_)
    assert drop["seed"] is ctypes.c_uint32 and drop["scale"] is ctypes.c_float
    # const pointers are what a kernel only reads
    assert pointer_fields("odl_mm_args_t") == {"a": True, "b": True, "c": False, "bias": True}
    assert pointer_fields("odl_bn_fwd_args_t")["running_mean"] is False
