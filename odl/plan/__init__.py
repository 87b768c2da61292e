"""plan: see docs/design.md for the stages."""
