"""Stand-in for Colab's google.colab (see tests/colab_standin/README.md)."""

from . import drive, output  # noqa: F401
