"""The core pipeline: pin → sources → workspace (patches) → plan → render → build."""
