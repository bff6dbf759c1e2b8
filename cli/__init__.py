"""The `convnet` command line (click): thin commands over convnet_io."""
