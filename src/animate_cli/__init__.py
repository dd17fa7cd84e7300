"""animate-cli: bring a portrait to life with the motion of a driving video."""

__version__ = "0.1.0"
