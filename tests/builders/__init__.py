"""Builders of test objects shared by every area (tiny real diffusers pipelines, data files, specs)."""
