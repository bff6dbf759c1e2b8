"""Layer converters, one module per family; importing this package registers them all."""
from . import vision  # noqa: F401
