"""Where the project keeps its checkpoints and caches."""

from __future__ import annotations

import os
from pathlib import Path

# The repository root when running from a checkout (editable install).
REPO_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Shipped checkpoints: ``$LAPO_MODELS_DIR`` or ``<repo>/models``."""
    return Path(os.environ.get("LAPO_MODELS_DIR", REPO_ROOT / "models"))


def default_model() -> Path:
    """The checkpoint `lapo serve` serves with no arguments."""
    return models_dir() / "lapo"


def cache_dir() -> Path:
    """Engine and hub caches: ``$LAPO_CACHE_DIR`` or ``<repo>/.cache`` (ignored by git)."""
    path = Path(os.environ.get("LAPO_CACHE_DIR", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path
