"""codegen: see docs/design.md for the stages."""
