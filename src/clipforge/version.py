"""The installed clipforge version, importable from any layer without climbing to the package root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clipforge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
