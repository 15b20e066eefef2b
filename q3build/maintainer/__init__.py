"""Maintainer tools: exporting the patch stack, upstream drift."""
