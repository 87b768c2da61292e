"""Where a program runs and how odl reaches it: the device flags of validate and train, built once by the CLI.
The session layer (odl.pipeline.open_session) is the only reader."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class DeviceOptions:
    emulator: str = "qemu"              # qemu | renode, when no port is given
    port: str | None = None             # a board's serial port or any pyserial URL (socket://...)
    baud: int = 115200
    flash: str | None = None            # shell command that flashes {elf} before the port is opened
    bulk: str = "fast"                  # QEMU: data loaded into memory (fast) or moved over the UART as a board (uart)
    step_timeout: float | None = None   # seconds one request may run before the device counts as hung (None: sized
                                        # by the program's work)
    check_races: bool = False           # QEMU under the timing plugin's race detector (firmware built -DODL_TIMED)

    @property
    def build_defines(self) -> list[str]:
        """-D macros the firmware needs for these options (the race detector reads the timed build's call marks)."""
        return ["ODL_TIMED"] if self.check_races else []

    def check(self) -> None:
        if self.check_races and (self.port or self.emulator != "qemu"):
            from odl.common.errors import OdlError
            raise OdlError("--check-races runs under QEMU's timing plugin: it cannot be combined with --port or "
                           "--emulator renode")

    @property
    def runner(self) -> str:
        """'serial', 'qemu' or 'renode'."""
        return "serial" if self.port else self.emulator

    @property
    def where(self) -> str:
        """What a progress line names: the port, else the emulator."""
        return self.port or self.emulator

    @property
    def bulk_path(self) -> str:
        """How bulk data really moves: only QEMU has the loader's fast path."""
        return "uart" if self.port or self.emulator == "renode" else self.bulk

    @property
    def data_in_memory(self) -> bool:
        """Whether a data set can sit in device memory before boot (QEMU's loader), so steps send only indices."""
        return self.port is None and self.emulator == "qemu" and self.bulk == "fast"

    @classmethod
    def from_args(cls, args) -> "DeviceOptions":
        """The options from parsed command-line arguments (those the command has)."""
        opts = cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
        opts.check()
        return opts
