"""``python -m convnet ...`` (and ``torchrun ... -m convnet train ...``): the convnet command line."""
