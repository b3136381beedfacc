"""The training stage: loops and pretraining, staged dense / ADMM / fine-tune training, checkpoints, torchrun."""
