"""Facts of the Qwen3-TTS 12 Hz models that every speech tool here relies on, written once."""

from __future__ import annotations

from pathlib import Path

SAMPLE_RATE = 24000        # the speech tokenizer's output rate (Hz)
FRAME_RATE = 12.5          # codec frames per second: 24 kHz / 1920 samples, 80 ms per frame
TALKER = "talker.gguf"     # a converted model directory holds these two files (`q3build model convert`)
MMPROJ = "mmproj.gguf"

# the reference's language names → the ISO 639-1 codes llama-tts and the speech route take
LANG_CODES = {"english": "en", "chinese": "zh", "german": "de", "spanish": "es", "japanese": "ja", "french": "fr",
              "korean": "ko", "russian": "ru", "italian": "it", "portuguese": "pt"}


def lang_code(language: str) -> str:
    """A language as llama-tts takes it: a known name becomes its code, anything else passes through."""
    return LANG_CODES.get(language, language)


def model_files(model_dir: Path) -> tuple[Path, Path]:
    return model_dir / TALKER, model_dir / MMPROJ


def missing_model_files(model_dir: Path) -> list[str]:
    return [p.name for p in model_files(model_dir) if not p.is_file()]


def audio_seconds(frames: int) -> float:
    return frames / FRAME_RATE
