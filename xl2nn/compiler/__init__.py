"""Stages 4-5: constant folding (grid recalculation) and lowering to torch."""
