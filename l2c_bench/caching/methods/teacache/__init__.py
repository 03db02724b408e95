"""TeaCache: the method (`method`), its calibration artifact (`coefficients`) and the fit that
makes it (`calibration`, which samples the model)."""

from .method import TeaCache, TeaCachePolicy

__all__ = ["TeaCache", "TeaCachePolicy"]
