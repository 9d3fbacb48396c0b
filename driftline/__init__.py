"""driftline: put AI models on live event streams safely."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("driftline")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
