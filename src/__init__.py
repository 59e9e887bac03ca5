"""Guided Self-Improvement (GSI): library code behind the top-level CLIs."""
