"""The set metrics' row fields (metrics.builtin.SetQuality): FID, KID, precision/recall against the
reference set, the Inception Score, the toy classifier's on-class rate and the class flip rate."""

from __future__ import annotations


def quality_metrics(point, part: dict, ref) -> dict:
    """Quality numbers from the run's features and logits (`ref`: `runs.score.quality_reference(point)`);
    None (with a note) where not available."""
    run = point.run
    out: dict = {"features": run.scale.features, "sfid": None}  # sFID needs spatial features we do not keep
    if (prompts := getattr(point.model, "prompt_set", None)) is not None:  # what the samples were conditioned on
        out["prompt_set"] = prompts.origin
    if point.features is None:
        return {**out, "quality_note": "no image metrics: random weights, or latents without a VAE"}
    from . import (
        feature_statistics,
        fid_from_statistics,
        inception_score,
        kid,
        on_class_rate,
        per_class_rate,
        precision_recall,
    )
    from .features import ReferenceMissing

    features, labels = part["features"].numpy(), part["labels"].numpy()
    logits = None if part["logits"] is None else part["logits"].numpy()
    out["features_tag"] = point.features.tag
    class_conditioned = getattr(point.model, "bank", None) is None  # text classes' labels are prompts
    if logits is not None and point.features.name == "toy" and run.metrics.class_accuracy and class_conditioned:
        out["on_class_rate"] = on_class_rate(logits, labels)
        out["on_class_rate_per_class"] = per_class_rate(logits, labels, logits.shape[1])
    if logits is None:
        out["is_note"] = "no classifier logits in this feature network: IS not available"
    elif len(logits) >= 10:  # 10 splits, as the field reports it (toy: over the 10 toy classes)
        out["is"], out["is_std"] = inception_score(logits, splits=10)
    if run.metrics.fid:
        if isinstance(ref, ReferenceMissing):
            return {**out, "quality_note": str(ref)}
        out["reference"] = ref.origin
        out["fid"] = fid_from_statistics(*feature_statistics(features), ref.mu, ref.sigma)
        if ref.features is not None:
            out["kid"] = kid(features, ref.features)
            if len(features) > 3:
                out["precision"], out["recall"] = precision_recall(features, ref.features, k=3)
    if part["reference_logits"] is not None:
        out["class_flip_rate"] = float((logits.argmax(1) != part["reference_logits"].numpy().argmax(1)).mean())
    return out
