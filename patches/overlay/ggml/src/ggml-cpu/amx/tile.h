#pragma once

// AMX tile configuration and tile loads whose asm declares the memory it reads, for every AMX kernel of
// ggml-cpu: the AMX buffer's quantized kernels (mmq.cpp) and tinyBLAS's BF16 tiles (llamafile/sgemm.cpp)

#include <cstdint>

#if defined(__AMX_TILE__)
#include <immintrin.h>

// the 64-byte operand of ldtilecfg/sttilecfg (palette 1: rows and bytes per row of tiles 0-7)
struct tile_config_t{
    uint8_t palette_id = 0;
    uint8_t start_row = 0;
    uint8_t reserved_0[14] = {0};
    uint16_t colsb[16] = {0};
    uint8_t rows[16] = {0};
};

// GCC's AMX intrinsics (amxtileintrin.h, GCC 12) under-declare the memory their asm reads.
// _tile_loadconfig gives an 8-byte memory operand (a pointer), so the optimizer may drop the stores that
// fill the rest of the 64-byte configuration as dead: ldtilecfg then reads stack garbage and faults
// (#GP), or leaves the tiles unconfigured and the first tile load faults (#UD). _tile_loadd and
// _tile_stream_loadd declare no memory at all, so stores into a buffer a tile is then loaded from (the
// unpacked A and B tiles) may be moved after the load: the product reads stale data. The asm here
// declares what is read.
#if defined(__GNUC__) && !defined(__clang__)
#undef _tile_loadd_internal
#define _tile_loadd_internal(dst, base, stride) \
    __asm__ volatile("{tileloadd\t(%0,%1,1), %%tmm" #dst "|tileloadd\t%%tmm" #dst ", [%0+%1*1]}" : : "r"((const void *) (base)), "r"((long) (stride)) : "memory")
#undef _tile_stream_loadd_internal
#define _tile_stream_loadd_internal(dst, base, stride) \
    __asm__ volatile("{tileloaddt1\t(%0,%1,1), %%tmm" #dst "|tileloaddt1\t%%tmm" #dst ", [%0+%1*1]}" : : "r"((const void *) (base)), "r"((long) (stride)) : "memory")
#endif

static inline void ggml_tile_loadconfig(const tile_config_t * tc) {
    static_assert(sizeof(tile_config_t) == 64, "ldtilecfg reads 64 bytes");
#if defined(__GNUC__) && !defined(__clang__)
    __asm__ volatile("ldtilecfg %0" : : "m"(*tc));
#else
    _tile_loadconfig(tc);
#endif
}

// the thread's current configuration (all zero when its tiles are not configured), for a kernel that
// configures the tiles its own way and must leave the thread's configuration as it found it
static inline void ggml_tile_storeconfig(tile_config_t * tc) {
#if defined(__GNUC__) && !defined(__clang__)
    __asm__ volatile("sttilecfg %0" : "=m"(*tc));
#else
    _tile_storeconfig(tc);
#endif
}
#endif // __AMX_TILE__
