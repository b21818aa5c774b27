"""tunekeeper: a daemon that runs Gemini API model-tuning jobs from a database queue."""

__version__ = "0.1.0"
