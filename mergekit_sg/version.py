"""The toolkit version, recorded in every output."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mergekit-sg")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

TOOLKIT = f"mergekit-sg {__version__}"
