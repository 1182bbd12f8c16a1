"""gsdeploy: take a compressed CNN, turn its compression into real speed, prove it."""

__version__ = "0.1.0"
