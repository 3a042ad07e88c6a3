"""The calibrated sample year end to end."""
