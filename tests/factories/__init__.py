"""Builders of test inputs shared across areas: API fakes and tiny models, decision inputs,
hand-made feature worlds and synthetic training frames."""
