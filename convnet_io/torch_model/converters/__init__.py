"""Layer converters, one module per family; importing this package registers them all."""
from . import activation, loss, normalization, shape_ops, vision  # noqa: F401
