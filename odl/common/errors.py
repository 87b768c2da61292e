"""Errors that reach the user as one line and a non-zero exit code."""


class OdlError(Exception):
    """Bad input from the user (unknown model, unsupported op, bad shape): exit code 2."""
    exit_code = 2


class ToolError(Exception):
    """A tool or the device failed (compiler, emulator, transport): exit code 3."""
    exit_code = 3
