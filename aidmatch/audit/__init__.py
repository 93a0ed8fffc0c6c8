"""The audit log: every status change, with who made it and when."""
