"""lapo: the core shared by training, evaluation and serving (the LAPO protocol, paths, env)."""

__version__ = "0.1.0"
