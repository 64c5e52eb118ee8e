"""The exception hierarchy: every error vaecodec raises on purpose derives from VaecodecError.

Imports nothing, so any module (the torch-free container included) can use it.
"""

from __future__ import annotations


class VaecodecError(Exception):
    """Root of all vaecodec errors. The CLI prints it as one line and exits with code 1."""


class FormatError(VaecodecError, ValueError):
    """The bytes are not a valid .vae file (bad magic, bad field, inconsistent lengths)."""


class TruncatedError(FormatError):
    """The file ends before its declared content does."""


class ChecksumError(FormatError):
    """The file's CRC32 does not match its content: the file is corrupt."""


class UnsupportedVersionError(FormatError):
    """The file uses a format version this vaecodec cannot read."""


class LimitError(FormatError):
    """A declared size exceeds a documented limit (pixels, lengths)."""


class ReadError(VaecodecError, OSError):
    """A .vae source cannot be read: no such file, a folder, no permission. The message names the file."""


class UnknownModelError(VaecodecError, LookupError):
    """The model id is not one this vaecodec knows."""


class WeightsError(VaecodecError):
    """The weights file is missing, corrupt (sha256 mismatch) or does not fit the model."""


class ModelMismatchError(VaecodecError, ValueError):
    """The file was made with other weights than the ones loaded."""


class DesyncError(VaecodecError):
    """The decoder's entropy parameters differ from the encoder's (index CRC mismatch)."""


class ImageError(VaecodecError, ValueError):
    """The input image cannot be read or has an unsupported layout."""


class TrainingError(VaecodecError):
    """Training cannot start or continue (no data, incompatible checkpoint)."""
