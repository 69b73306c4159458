"""The package version, in a module of its own so any module can import it without
importing the package API."""

__version__ = "0.1.0"
