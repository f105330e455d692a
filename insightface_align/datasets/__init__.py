"""Readers for the benchmark formats; each yields FaceSample objects."""
from .sample import FaceSample

__all__ = ["FaceSample"]
