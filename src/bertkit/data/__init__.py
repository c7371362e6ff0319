"""Data for pre-training: raw corpora (corpus.py), prepared token files (prepare.py), MLM + NSP samples (pretraining.py)."""
