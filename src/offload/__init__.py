"""offload: a durable background task queue for AI coding agents and people."""

__all__ = ["__version__"]

__version__ = "0.1.0"
