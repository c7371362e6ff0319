"""Training: the loops (pre-training, fine-tuning), the optimizer and schedule, distributed setup, run state."""
