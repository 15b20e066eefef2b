"""Experiment: a copy of a talker GGUF whose q/k/v weights per layer are one attn_qkv weight (rows
q | k | v), which llama's build_qkv takes when present."""
import sys
import numpy as np
import gguf

src, dst = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(src)
arch = r.fields[gguf.Keys.General.ARCHITECTURE].contents()
w = gguf.GGUFWriter(dst, arch)
for field in r.fields.values():
    if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith('GGUF.'):
        continue
    vt = field.types[0]
    st = field.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
    w.add_key_value(field.name, field.contents(), vt, sub_type=st)
by = {t.name: t for t in r.tensors}
out = []
for t in r.tensors:
    n = t.name
    if n.endswith('attn_q.weight'):
        b = n[:-len('attn_q.weight')]
        q, k, v = by[b + 'attn_q.weight'], by[b + 'attn_k.weight'], by[b + 'attn_v.weight']
        assert q.tensor_type == k.tensor_type == v.tensor_type
        data = np.concatenate([q.data, k.data, v.data], axis=0)
        out.append((b + 'attn_qkv.weight', data, q.tensor_type))
    elif n.endswith('attn_k.weight') or n.endswith('attn_v.weight'):
        continue
    else:
        out.append((n, t.data, t.tensor_type))
for n, d, tt in out:
    w.add_tensor_info(n, d.shape, d.dtype, d.nbytes, tt)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file()
for n, d, tt in out:
    w.write_tensor_data(d)
w.close()
print('wrote', dst, len(out), 'tensors')
