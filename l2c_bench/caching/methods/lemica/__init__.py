"""LeMiCa: the method (`method`), its calibration of segment errors (`calibration`) and the
offline lexicographic minimax path search over them (`search`)."""

from .method import LeMiCa

__all__ = ["LeMiCa"]
