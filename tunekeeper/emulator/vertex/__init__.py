"""Vertex AI, as far as tuning Gemini models goes: tuning jobs, and the models and endpoints they leave."""
