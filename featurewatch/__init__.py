"""featurewatch: sparse dictionary features of a language model, traced and monitored."""

__version__ = "0.1.0"
