"""Front-desk side: what window terminals send (the producer, the simulated sample year)."""
