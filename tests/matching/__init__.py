"""Pure-tier tests of the matching core."""
