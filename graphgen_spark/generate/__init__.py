"""QA generation (method §7): response models, validation and the per-batch programs."""
