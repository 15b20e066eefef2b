"""Qwen3-TTS model fixtures and conversion: tiny random checkpoints in the released Hugging Face
layout, and conversion to GGUF with the synced tree's own converter."""
