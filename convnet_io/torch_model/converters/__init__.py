"""Layer converters, one module per family; importing this package registers them all."""
from convnet_io.torch_model.converters import loss_extra, pyramid  # noqa: F401  (the rest of BVLC's registry)
from convnet_io.torch_model.converters import activation, loss, normalization, recurrent, shape_ops, vision  # noqa: F401
from convnet_io.torch_model.converters import mobile, segmentation, two_stage, yolo  # noqa: F401  (fork layers)
from convnet_io.torch_model.converters import detection  # noqa: F401  (SSD)
