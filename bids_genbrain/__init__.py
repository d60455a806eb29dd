"""bids_genbrain: a BIDS-App for GenBrain, a generative diffusion model of brain images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bids_genbrain")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
