"""Preference-Aligned Distillation (PAD, arXiv 2502.14272) as a third pipeline, Align → PAD."""
