"""offers slice."""
