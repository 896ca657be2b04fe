"""LAPO training pipeline."""
