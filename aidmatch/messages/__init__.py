"""messages slice."""
