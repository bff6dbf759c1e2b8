"""Training: Caffe's solvers, schedules and snapshots on the PyTorch model."""
