"""Load tests and the side-by-side benchmark against raw vLLM."""
