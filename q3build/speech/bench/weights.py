"""Weight bytes one frame reads, from the converted model's GGUF headers (pure but for reading them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from q3build.speech.facts import model_files


def read_gguf_header(path: Path) -> tuple[dict, dict[str, int], dict[str, int]]:
    """(scalar and string metadata, bytes of every tensor, ggml type id of every tensor) of a GGUF file;
    ValueError when it is not one. The gguf package reads it (memory-mapped: no tensor is loaded)."""
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError) as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from None
    meta = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or not f.types or f.types[0] == GGUFValueType.ARRAY:
            continue
        meta[name] = f.contents()
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    types = {t.name: int(t.tensor_type) for t in reader.tensors}
    return meta, sizes, types


def gguf_tensor_bytes(path: Path) -> dict[str, int]:
    """Bytes of every tensor in a GGUF file."""
    return read_gguf_header(path)[1]


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """The ggml type id of every tensor in a GGUF file (0 = F32, 1 = F16, 8 = Q8_0, 2 = Q4_0)."""
    return read_gguf_header(path)[2]


def kv_cache_bytes(meta: Mapping, *, n_ctx: int | None = None, bytes_per_value: int = 2) -> int | None:
    """The talker's KV cache (K and V, f16 by default) at n_ctx tokens, default the model's context
    length (what llama-tts and llama-server allocate with -c 0)."""
    arch = meta.get("general.architecture")
    get = (lambda k: meta.get(f"{arch}.{k}")) if arch else (lambda k: None)
    layers, kv_heads = get("block_count"), get("attention.head_count_kv")
    k_len = get("attention.key_length") or (get("embedding_length") or 0) // max(get("attention.head_count") or 1, 1)
    v_len = get("attention.value_length") or k_len
    ctx = n_ctx or get("context_length")
    if not (layers and kv_heads and k_len and ctx):
        return None
    return int(ctx * layers * kv_heads * (k_len + v_len) * bytes_per_value)


def weight_bytes_per_frame(talker: Mapping[str, int], mmproj: Mapping[str, int], *, predictor_passes: int = 15) -> dict:
    """Weight bytes one frame reads.

    The talker runs one step per frame and reads every tensor except its token embedding table
    (a row lookup). The code predictor runs `predictor_passes` passes per frame (one per acoustic
    codebook) and reads its layers and input projection (1.7B) each pass; its per-codebook heads
    are stacked, each pass reads one slice, so the stack is read once per frame. Embedding tables
    are row lookups and not counted; neither is the codec decoder (its own stage, conv-dominated).
    """
    talker_b = sum(v for k, v in talker.items() if not k.startswith("token_embd"))
    layers = sum(v for k, v in mmproj.items()
                 if k.startswith(("a.gen.code.blk.", "a.gen.code.proj_in.", "a.gen.code.output_norm.")))
    heads = sum(v for k, v in mmproj.items() if k.startswith("a.gen.code.head."))
    predictor_b = layers * predictor_passes + heads
    return {"talker_bytes": talker_b, "predictor_layer_bytes": layers, "predictor_head_bytes": heads,
            "predictor_bytes": predictor_b, "bytes_per_frame": talker_b + predictor_b}


_NORMS = ("norm.weight", ".ln1.weight", ".ln2.weight")


def model_weights(model_dir: Path) -> dict:
    """Weight bytes per frame of a converted model directory, the f32 matrices of the code predictor,
    the talker's KV cache at its default context, and the file sizes."""
    talker_file, mmproj_file = model_files(model_dir)
    meta, talker_bytes, _ = read_gguf_header(talker_file)
    _, mm_bytes, mm_types = read_gguf_header(mmproj_file)
    w = weight_bytes_per_frame(talker_bytes, mm_bytes)
    # matrices the converter keeps in f32 whatever the outtype (read on every predictor pass)
    w["predictor_f32_matrix_bytes"] = sum(v for k, v in mm_bytes.items() if k.startswith("a.gen.code.blk.")
                                          and mm_types.get(k) == 0 and not k.endswith(_NORMS))
    w["kv_cache_bytes"] = kv_cache_bytes(meta)
    w["context_length"] = meta.get(f"{meta.get('general.architecture')}.context_length")
    w["file_bytes"] = talker_file.stat().st_size + mmproj_file.stat().st_size
    return w


def bandwidth_share(bytes_per_frame: int, frames_per_s: float | None, read_gbps: float | None) -> dict:
    if not frames_per_s or not read_gbps:
        return {"weight_read_gbps": None, "bandwidth_share": None}
    rate = bytes_per_frame * frames_per_s / 1e9
    return {"weight_read_gbps": rate, "bandwidth_share": rate / read_gbps}
