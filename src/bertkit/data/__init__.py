"""Data: raw corpora (corpus.py), prepared token files (prepare.py) and MLM + NSP samples (pretraining.py)
for pre-training; labeled task files (tasks.py) and their model inputs (features.py) for fine-tuning."""
