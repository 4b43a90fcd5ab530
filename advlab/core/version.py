"""The version of advlab (the package top re-exports it)."""

__version__ = "0.1.0"
