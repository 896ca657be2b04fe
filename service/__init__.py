"""OpenAI-compatible serving on vLLM."""
