"""alignkd: the library behind the companion book to "Why Alignment Must Precede Distillation"."""

__version__ = "0.1.0"
