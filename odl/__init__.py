"""odl: on-device learning for RISC-V multicore MCUs."""
__version__ = "0.1.0"
