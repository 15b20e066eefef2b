"""q3build: pinned llama.cpp + our patch stack → llama-server with a Qwen3-TTS speech service."""

__version__ = "0.1.0"
