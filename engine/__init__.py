"""Training: the trainer, one exact step, optimizer and schedule, checkpoints, EMA, DDP helpers, run bookkeeping."""
