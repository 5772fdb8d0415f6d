"""cloudtap: east-west traffic collection and analysis for private clouds."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
