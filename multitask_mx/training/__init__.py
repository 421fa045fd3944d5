"""Training: loss, loop, metrics, schedules, checkpoints, distributed training."""
