"""st_interop: the Python half of testdata/safetensors_test.sh.

Checks that the reference safetensors library (its Rust core, through the
Python bindings) and golfkit's C reader and writer agree on the format, in
both directions. The expected tensors here mirror the fixture in
lib/safetensors_test.c; keep the two in step.

    st_interop.py check-c C.st C-ALL.st   load what C wrote: load_file and
                                          safe_open(...).metadata() on C.st,
                                          deserialize (raw bytes, every dtype,
                                          BF16 and F8 too) on C-ALL.st
    st_interop.py write DIR               write DIR/py.safetensors (save_file)
                                          and DIR/py-raw.safetensors
                                          (serialize_file: BF16, F8)
    st_interop.py check-summary PY.json RAW.json
                                          compare the C reader's summaries
                                          (safetensors_test --read) of those

Exits 0 when everything agrees; otherwise prints each difference and exits 1.
"""
import json
import os
import sys

import numpy as np
import xxhash
from safetensors import TensorSpec, deserialize, safe_open, serialize_file
from safetensors.numpy import load_file, save_file

# --- what lib/safetensors_test.c writes ---------------------------------------
C_NUMPY = {
    "a.f32": np.array([[-1.0, -0.5, 0.0], [0.5, 1e-30, 3.4e38]], dtype="<f4"),
    "b.f16": np.array([1.0, -2.0, 0.5, np.inf], dtype="<f2"),
    "d.f64": np.array([1.5, -2.25, 1e300], dtype="<f8"),
    "e.i8": np.array([-128, -1, 0, 1, 127], dtype="i1"),
    "empty": np.zeros((0, 4), dtype="<f4"),
    "f.u8": np.array([0, 128, 255], dtype="u1"),
    "g.i16": np.array([-32768, 32767], dtype="<i2"),
    "h.u16": np.array([0, 65535], dtype="<u2"),
    "i.i32": np.array([-(2**31), -1, 1, 2**31 - 1], dtype="<i4").reshape(2, 1, 2),
    "j.u32": np.array([4000000000], dtype="<u4"),
    "k.i64": np.array([-(2**63), 2**63 - 1], dtype="<i8"),
    "l.u64": np.array([0, 2**64 - 1], dtype="<u8"),
    "m.bool": np.array([True, False, True]),
    "scalar": np.array(3.25, dtype="<f4"),
}
NP_DTYPE = {"f4": "F32", "f2": "F16", "f8": "F64", "i1": "I8", "u1": "U8", "i2": "I16",
            "u2": "U16", "i4": "I32", "u4": "U32", "i8": "I64", "u8": "U64", "b1": "BOOL"}
# dtypes numpy lacks: (dtype, shape, bytes)
C_RAW = {
    "c.bf16": ("BF16", [2, 2], np.array([0x3F80, 0xC000, 0x4040, 0], dtype="<u2").tobytes()),
    "n.f8": ("F8_E4M3", [2], bytes([0x38, 0xB8])),
}
C_META = {
    "config": '{"d_model": 8, "vocab": 1024}',
    "step": "100",
    "note": 'h\u00e9llo \u2713 "quoted"\nsecond line',
}

# --- what this script writes for the C reader ----------------------------------
PY_NUMPY = {
    "tok_emb.weight": (np.arange(12, dtype="<f4").reshape(3, 4) / 7).astype("<f4"),
    "blocks.0.attn.c_q.weight": np.array([[0.25, -1.5], [65504.0, -0.0]], dtype="<f2"),
    "blocks.0.mlp.scale": np.array([1.0, np.pi, -np.e], dtype="<f8"),
    "step": np.array(12345, dtype="<i8"),
    "mask": np.array([[True, False], [False, True]]),
    "codes": np.array([-7, 0, 7, 3], dtype="i1"),
    "hist": np.array([1, 2**40, 2**64 - 2], dtype="<u8"),
    "ids": np.array([65535, 1], dtype="<u2"),
    "none": np.zeros((2, 0), dtype="<i2"),
    "pos": np.array([[2**31 - 1], [-5]], dtype="<i4"),
    "u8": np.array([200], dtype="u1"),
    "u32": np.array([123456789], dtype="<u4"),
    "i16": np.array([-300], dtype="<i2"),
}
PY_RAW = {
    "w.bf16": ("BF16", [3], np.array([0x3F80, 0xBF00, 0x7F80], dtype="<u2").tobytes()),
    "q.f8": ("F8_E5M2", [1, 2], bytes([0x3C, 0xBC])),
}
PY_META = {"format": "pt", "config": json.dumps({"n_layer": 2, "note": "\u00fcber"})}

SPEC_DTYPE = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

errors = []


def check(cond, what):
    if not cond:
        errors.append(what)


def data_buffer(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return raw[8 + n:]


def check_c(path_np, path_all):
    got = load_file(path_np)
    check(sorted(got) == sorted(C_NUMPY), f"load_file names: {sorted(got)}")
    for name, want in C_NUMPY.items():
        arr = got.get(name)
        if arr is None:
            continue
        check(arr.dtype == want.dtype, f"{name}: dtype {arr.dtype}, expected {want.dtype}")
        check(arr.shape == want.shape, f"{name}: shape {arr.shape}, expected {want.shape}")
        check(arr.tobytes() == want.tobytes(), f"{name}: values {arr!r}, expected {want!r}")
    with safe_open(path_np, framework="numpy") as f:
        meta = f.metadata()
        check(sorted(f.keys()) == sorted(C_NUMPY), f"safe_open keys: {sorted(f.keys())}")
        check(np.array_equal(f.get_tensor("a.f32"), C_NUMPY["a.f32"]), "safe_open get_tensor a.f32")
    digest = meta.pop("golfkit.xxh64", None)
    check(meta == C_META, f"metadata {meta!r}, expected {C_META!r}")
    want_digest = xxhash.xxh64_hexdigest(data_buffer(path_np))
    check(digest == want_digest, f"golfkit.xxh64 {digest}, expected {want_digest} (xxh64 of the data)")

    with open(path_all, "rb") as f:
        flat = dict(deserialize(f.read()))
    want_all = {k: (NP_DTYPE[v.dtype.str[1:]], list(v.shape), v.tobytes())
                for k, v in C_NUMPY.items()}
    want_all.update(C_RAW)
    check(sorted(flat) == sorted(want_all), f"deserialize names: {sorted(flat)}")
    for name, (dtype, shape, data) in want_all.items():
        t = flat.get(name)
        if t is None:
            continue
        got_t = (t["dtype"], list(t["shape"]), bytes(t["data"]))
        check(got_t == (dtype, shape, data), f"{name}: {got_t!r}, expected {(dtype, shape, data)!r}")


def write(d):
    save_file(PY_NUMPY, os.path.join(d, "py.safetensors"), metadata=PY_META)
    keep = {k: np.frombuffer(data, dtype="u1") for k, (_, _, data) in PY_RAW.items()}
    specs = {k: TensorSpec(dtype=SPEC_DTYPE[dtype], shape=shape, data_ptr=keep[k].ctypes.data,
                           data_len=len(data))
             for k, (dtype, shape, data) in PY_RAW.items()}
    serialize_file(specs, os.path.join(d, "py-raw.safetensors"), metadata={"kind": "raw"})


def check_summary(summary, tensors, meta):
    with open(summary) as f:
        s = json.load(f)
    check(s["checksum"] == "absent", f"{summary}: checksum {s['checksum']}, expected absent")
    check(s["metadata"] == meta, f"{summary}: metadata {s['metadata']!r}, expected {meta!r}")
    names = [t["name"] for t in s["tensors"]]
    check(names == sorted(tensors, key=lambda n: n.encode()),
          f"{summary}: names {names}, expected {sorted(tensors)} in byte order")
    for t in s["tensors"]:
        want = tensors.get(t["name"])
        if want is None:
            continue
        got_t = (t["dtype"], t["shape"], t["hex"])
        want_t = (want[0], want[1], want[2].hex())
        check(got_t == want_t, f"{summary}: {t['name']}: {got_t!r}, expected {want_t!r}")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "check-c":
        check_c(*args)
    elif mode == "write":
        write(*args)
    elif mode == "check-summary":
        py = {k: (NP_DTYPE[v.dtype.str[1:]], list(v.shape), v.tobytes()) for k, v in PY_NUMPY.items()}
        check_summary(args[0], py, PY_META)
        check_summary(args[1], PY_RAW, {"kind": "raw"})
    else:
        sys.exit(f"st_interop.py: unknown mode {mode!r}")
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
