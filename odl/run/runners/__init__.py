"""Runners: execute a firmware ELF on an emulator or a board and talk to it over the odl protocol."""
from odl.run.runners.qemu import QemuRunner, RunnerError

__all__ = ["QemuRunner", "RunnerError"]
