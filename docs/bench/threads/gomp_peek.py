"""libgomp's gomp_managed_threads / gomp_available_cpus / gomp_spin_count_var of a running process (Debian 12
libgomp.so.1.0.0: offsets read from its do_spin disassembly: managed 0x473b0, cpus 0x473b8, spin 0x476c0)."""
import struct, sys
def peek(pid):
    base = None
    for ln in open(f"/proc/{pid}/maps"):
        f = ln.split()
        if f[-1].endswith("libgomp.so.1.0.0") and int(f[2], 16) == 0:
            base = int(f[0].split("-")[0], 16); break
    if base is None:
        return None
    with open(f"/proc/{pid}/mem", "rb") as m:
        def q(off):
            m.seek(base + off); return struct.unpack("<Q", m.read(8))[0]
        return {"gomp_managed_threads": q(0x473b0), "gomp_available_cpus": q(0x473b8), "gomp_spin_count_var": q(0x476c0)}
if __name__ == "__main__":
    print(peek(int(sys.argv[1])))
