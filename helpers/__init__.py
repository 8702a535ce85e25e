"""Helpers shared by the Triton Serving Lab notebooks."""
