"""aidmatch: disaster mutual-aid matching engine (the application package)."""

__version__ = "0.1.0"
