"""The model registry: versioned models with aliases, imported as ``anomtune.registry``."""

__all__: list[str] = []
