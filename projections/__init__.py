"""Read models, the pure fold, and the projector that connects them to a log."""

from .open import open_read_model

__all__ = ["open_read_model"]
