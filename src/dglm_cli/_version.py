"""The package version, in a module of its own so that library modules never import the package root."""

__version__ = "0.1.0"
