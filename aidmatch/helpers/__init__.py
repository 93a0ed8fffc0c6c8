"""helpers slice."""
