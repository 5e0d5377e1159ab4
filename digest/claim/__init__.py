"""Claim: which published comparisons an issue takes, how they rank, and which readers get which segment."""
