"""Knowledge-gap scoring: verdict probabilities, comprehension loss, calibration (method.md §5)."""
