"""matches slice."""
