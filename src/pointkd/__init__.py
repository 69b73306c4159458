"""pointkd: offline knowledge distillation for point-cloud classification."""

__version__ = "0.1.0"
