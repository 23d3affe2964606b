"""Seeded, template-based generators for the offline datasets (each module: ``generate(seed)`` or prompts)."""
