"""Read models, the pure fold, and the projector that connects them to a log."""
