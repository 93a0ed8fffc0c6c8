"""needs slice."""
