"""Evaluation for fine-tuning: sentence and entity metrics (metrics.py), SQuAD scoring and answer extraction (squad.py)."""

from bertkit.eval.metrics import (accuracy, entity_f1, f1_binary, glue_metrics, matthews_corrcoef, pearson,
                                  spearman)

__all__ = ["accuracy", "entity_f1", "f1_binary", "glue_metrics", "matthews_corrcoef", "pearson", "spearman"]
