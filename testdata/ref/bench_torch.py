"""bench_torch: the PyTorch peer that bench-train-cuda times moe-train --device cuda against.

    python testdata/ref/bench_torch.py --config EFFECTIVE.json --shards 'DIR/*.bin' \
        [--warmup 3] [--steps 5] [--name NAME]
    python testdata/ref/bench_torch.py --config EFFECTIVE.json --shards 'DIR/*_train_*.bin' \
        --init INIT.safetensors --log LOSSES.jsonl --val 'DIR/*_val_*.bin' --val-every K \
        --warmup 1 --steps N
    python testdata/ref/bench_torch.py --gemm

Trains ref_model.GPT (the parity reference, imported unchanged) the way
train_gpt.py runs on a GPU: torch.compile, bf16 autocast, flash attention,
Muon with a bf16 Newton-Schulz for the block matrices and Adam for the rest
(ref_train.py's split and update rules), gradient accumulation over the
config's grad_accum micro-batches (8 x 64 x 1024 tokens for the golf
baseline's 524,288-token step), on the same shards as moe-train, read as
ref_train.py reads them. After WARMUP steps (the first one compiles), STEPS
steps are timed, each between two torch.cuda.synchronize(); the median is
reported. One JSON line on stdout:

    {"impl":"pytorch","config":NAME,"device":...,"tokens_per_s":...,"step_ms":...,
     "first_step_s":...,"params":...,"active_params":...,"warmup":...,"steps":...,
     "loss":...}

first_step_s runs from this script's first line (before torch is imported,
so it includes the import, the CUDA start, compilation and the first step's
work) to the end of the first optimizer step. params counts the trainable
parameters; active_params leaves out the n_experts - top_k routed experts a
token skips, as moe-train's gk_config_params does.

The second form is the quality-parity run (pipelines/parity-cuda.sh): it
starts from moe-train's initial weights (--init, a moe-train safetensors
file), writes {"step", "train_loss"} for every step and {"step", "val_loss"}
every K steps and after the last to LOSSES.jsonl, the lines moe-train logs.
The validation is train_gpt.py's eval_val as lib/loader.h's gk_val_run does
it: the val shards back to back, cut to train.val_tokens + 1 tokens (all when
0) and to whole sequences, scored in batches of val_batch_tokens / grad_accum
tokens; the batch count must divide the sequences (a shorter last batch would
recompile), and the mean is over every target.

--gemm instead prints torch's own bf16 matmul rate at 8192^3 (median of 50
after 10 warm-up calls, cudaEvent-timed) as {"impl":"pytorch","gemm":...,
"tflops":...}: the rate the train_gpt.py anchor's MFU was measured against,
beside bench-gemm's rate through our cuBLASLt wrapper.

What ref_model.py does for exactness is replaced here for speed, by
monkeypatching (the parity files stay untouched):
- Attention: F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)
  in bf16, with only the flash backend allowed (so a shape it cannot take is
  an error, not a silent fall back to the math kernel), instead of the
  written-out float32 softmax.
- MoE: a sort-based dispatch with torch._grouped_mm (one grouped GEMM per
  expert matrix, static shapes, so it compiles into the model's graph) instead
  of a Python loop over experts with data-dependent shapes; the expert loads
  are counted on the GPU (no host sync per layer). The router and its bias
  update are ref_model's.
- Newton-Schulz in bf16, compiled, as train_gpt.py's (ref_train.py's is
  float32 for the parity check).
- Adam with foreach=True.
Keys of the effective config that ref_model does not know (settings newer than
it, e.g. train.ema_decay) are dropped and named on stderr; the golf configs
leave them at their defaults.
"""

import time

T_LAUNCH = time.time()  # first: launch-to-first-step includes importing torch

import argparse
import glob
import json
import os
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

import ref_model
import ref_train
from ref_model import GPT, Config, apply_rope, rms_norm
from ref_train import newton_schulz as ref_newton_schulz  # the original, before the swap below

# Rows of each expert's group in the grouped GEMMs start at multiples of this
# (padding rows are zeros): the grouped kernels want 16-byte-aligned groups
# along every dimension the offsets cut, and dW's reduction dimension is the
# token one. 16 rows covers bf16 with room to spare.
GROUP_ALIGN = 16


def log(msg):
    print(f"bench_torch: {msg}", file=sys.stderr, flush=True)


def sdpa_attention_forward(self, x, cos, sin):
    """ref_model.Attention.forward with the fused flash kernel (bf16)."""
    B, T, C = x.shape
    q = self.c_q(x).view(B, T, self.H, self.D).transpose(1, 2)
    k = self.c_k(x).view(B, T, self.KV, self.D).transpose(1, 2)
    v = self.c_v(x).view(B, T, self.KV, self.D).transpose(1, 2)
    q = apply_rope(rms_norm(q), cos, sin, self.R) * self.q_gain[None, :, None, None]
    k = apply_rope(rms_norm(k), cos, sin, self.R)
    bf = torch.bfloat16
    y = F.scaled_dot_product_attention(q.to(bf), k.to(bf), v.to(bf), is_causal=True,
                                       enable_gqa=True)
    return self.proj(y.transpose(1, 2).reshape(B, T, C))


def grouped_moe_forward(self, x, tokens):
    """ref_model.MoE.forward as sort, two grouped GEMMs, weighted scatter-add."""
    B, T, C = x.shape
    xf = x.reshape(-1, C)
    idx, w = self.route(xf, tokens.reshape(-1))  # [N, k] each
    N, k, E = xf.size(0), idx.size(1), self.E
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)  # the N*k assignments, grouped by expert
    counts = torch.zeros(E, dtype=torch.int64, device=x.device).scatter_add_(
        0, flat, torch.ones_like(flat))
    self.load += counts
    padded = (counts + GROUP_ALIGN - 1) // GROUP_ALIGN * GROUP_ALIGN
    start, pstart = counts.cumsum(0) - counts, padded.cumsum(0) - padded
    e_sorted = flat[order]
    row = pstart[e_sorted] + torch.arange(N * k, device=x.device) - start[e_sorted]
    tok = order // k  # the token of each sorted assignment
    bf = torch.bfloat16
    # Rows beyond the last offset exist so that it stays below the length.
    xs = xf.new_zeros(N * k + E * GROUP_ALIGN, C, dtype=bf).index_copy(0, row, xf[tok].to(bf))
    offs = padded.cumsum(0).to(torch.int32)
    fc = torch.stack([e.fc.weight for e in self.experts]).to(bf)  # [E, F or 2F, C]
    proj = torch.stack([e.proj.weight for e in self.experts]).to(bf)  # [E, C, F]
    # autocast runs relu2's square (pow) in float32: back to bf16 for the GEMM
    h = ref_model.activation(torch._grouped_mm(xs, fc.transpose(1, 2), offs=offs),
                             self.experts[0].act).to(bf)
    ys = torch._grouped_mm(h, proj.transpose(1, 2), offs=offs)
    weighted = (ys[row] * w.reshape(-1)[order, None]).to(xf.dtype)
    out = torch.zeros_like(xf).index_add_(0, tok, weighted)
    for expert in self.shared:
        out = out + expert(xf)
    return out.view(B, T, C)


def newton_schulz_bf16(G, steps):
    """ref_train's Newton-Schulz in bf16, as train_gpt.py's zeropower_via_newtonschulz5."""
    return ref_newton_schulz(G, steps, dtype=torch.bfloat16)


def load_val(pattern, seq_len, max_tokens):
    """[sequences, seq_len + 1] of eval_val: the val shards in sorted order, cut
    to max_tokens + 1 tokens (0: all) and to whole sequences, each row holding a
    sequence's inputs and, shifted by one, its targets."""
    tokens = np.concatenate([ref_train.read_shard(f) for f in sorted(glob.glob(pattern))])
    if max_tokens > 0:
        tokens = tokens[:max_tokens + 1]
    n = (tokens.size - 1) // seq_len
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return tokens[idx]


def load_config(path):
    """ref_model's Config from moe-train's effective config, minus unknown keys."""
    with open(path) as f:
        raw = json.load(f)
    dropped = [f"{sec}.{key}" for sec, keys in raw.items() for key in keys
               if key not in ref_model.DEFAULTS.get(sec, {})]
    if dropped:
        log(f"{path}: not modelled by ref_model, dropped: {', '.join(dropped)}")
    return Config({sec: {k: v for k, v in keys.items() if k in ref_model.DEFAULTS.get(sec, {})}
                   for sec, keys in raw.items()})


def gemm_rate():
    """torch's median bf16 matmul TFLOP/s at 8192^3."""
    n, warmup, reps = 8192, 10, 50
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(warmup):
        a @ b
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
    ev[0].record()
    for i in range(reps):
        a @ b
        ev[i + 1].record()
    torch.cuda.synchronize()
    ms = statistics.median(ev[i].elapsed_time(ev[i + 1]) for i in range(reps))
    print(json.dumps({"impl": "pytorch", "device": torch.cuda.get_device_name(),
                      "gemm": f"{n}x{n}x{n}", "ms": round(ms, 4),
                      "tflops": round(2 * n**3 / (ms * 1e-3) / 1e12, 1)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="moe-train's effective config (--print-config)")
    ap.add_argument("--shards", help="glob of training shards (quote it)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--name", help="the config's name in the output (default: file stem)")
    ap.add_argument("--init", help="start from these weights (moe-train safetensors)")
    ap.add_argument("--log", help="write each step's train_loss (and val_loss) here, JSON lines")
    ap.add_argument("--val", help="glob of validation shards (quote it), with --val-every")
    ap.add_argument("--val-every", type=int, default=0, help="validate every K steps and last")
    ap.add_argument("--gemm", action="store_true", help="print the bf16 matmul rate and exit")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_torch: no CUDA device visible to torch")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.gemm:
        gemm_rate()
        return
    if not args.config or not args.shards:
        ap.error("--config and --shards are required (or --gemm)")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1 (the first step compiles)")
    # flash only: a shape it refuses is an error instead of a slow fallback
    torch.backends.cuda.enable_flash_sdp(True)
    torch.backends.cuda.enable_cudnn_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_math_sdp(False)
    ref_model.Attention.forward = sdpa_attention_forward
    ref_model.MoE.forward = grouped_moe_forward
    ref_train.newton_schulz = torch.compile(newton_schulz_bf16)

    cfg = load_config(args.config)
    m, t = cfg.model, cfg.train
    device = torch.device("cuda", torch.cuda.current_device())  # as tokens.device compares
    if t.batch_tokens % (t.grad_accum * m.seq_len):
        raise SystemExit("bench_torch: batch_tokens is not whole sequences per micro-batch")
    per_micro = t.batch_tokens // t.grad_accum
    model = GPT(cfg).to(device)
    if args.init:
        model.load_safetensors(args.init, log=log)
    for moe in model.moe_layers():  # loads counted on the GPU, as a buffer the graph updates
        del moe.load
        moe.register_buffer("load", torch.zeros(moe.E, dtype=torch.int64, device=device),
                            persistent=False)
    model.rope = ((m.seq_len, device),  # built before compiling: no side effect in the graph
                  ref_model.rope_tables(m.seq_len, cfg.rope_dims, m.rope_base, device))
    muon, adams = ref_train.build_optimizers(model, cfg)
    for opt, _ in adams:
        for group in opt.param_groups:
            group["foreach"] = True
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    expert = sum(p.numel() for p in model.moe_layers()[0].experts[0].parameters()) \
        if cfg.is_moe else 0
    active = n_params - m.n_layer * (cfg.moe.n_experts - cfg.moe.top_k) * expert \
        if cfg.is_moe else n_params
    cmodel = torch.compile(model, dynamic=False)
    stream = ref_train.TokenStream(args.shards)
    log(f"{n_params} parameters ({active} active), {t.grad_accum} micro-batches of "
        f"{per_micro} tokens, {torch.cuda.get_device_name()}")

    def step(k):
        # one host-to-device copy a step, pinned and asynchronous, so that the
        # host is never stalled behind the GPU's previous micro-batch
        spans = np.stack([stream.take(per_micro + 1) for _ in range(t.grad_accum)])
        batch = torch.from_numpy(spans.astype(np.int64)).pin_memory().to(device,
                                                                        non_blocking=True)
        for p in params:
            p.grad = None
        total = torch.zeros((), device=device)
        for i in range(t.grad_accum):
            x = batch[i, :-1].view(-1, m.seq_len)
            y = batch[i, 1:].view(-1, m.seq_len)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = cmodel(x, y)
            (loss / t.grad_accum).backward()
            total += loss.detach()
        scale = ref_train.lr_scale(k, t)
        w = t.muon_momentum_warmup_steps
        frac = min(k / w, 1.0) if w > 0 else 1.0
        muon.step(t.matrix_lr * scale,
                  (1 - frac) * t.muon_momentum_warmup_start + frac * t.muon_momentum)
        for opt, base_lr in adams:
            for group in opt.param_groups:
                group["lr"] = base_lr * scale
            opt.step()
        for moe in model.moe_layers():
            moe.update_bias()
        return total / t.grad_accum

    val = load_val(args.val, m.seq_len, t.val_tokens) if args.val else None
    val_batch = t.val_batch_tokens // t.grad_accum // m.seq_len
    if val is not None and (val_batch < 1 or len(val) % val_batch):
        raise SystemExit(f"bench_torch: {len(val)} val sequences do not split into batches of "
                         f"{val_batch}")

    def validate():
        # validation forwards are not routed load (moe-train does not count them)
        loads = [moe.load.clone() for moe in model.moe_layers()]
        total = 0.0
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            for i in range(0, len(val), val_batch):
                b = torch.from_numpy(val[i:i + val_batch].astype(np.int64)).to(device)
                total += cmodel(b[:, :-1].contiguous(), b[:, 1:].contiguous()).item() * len(b)
        for moe, load in zip(model.moe_layers(), loads):
            moe.load.copy_(load)
        return total / len(val)

    logf = open(args.log, "w") if args.log else None
    times, first_step_s, loss = [], None, None
    n_steps = args.warmup + args.steps
    for k in range(n_steps):
        torch.cuda.synchronize()
        t0 = time.time()
        loss = step(k).item()
        torch.cuda.synchronize()
        t1 = time.time()
        if logf:
            logf.write(json.dumps({"step": k + 1, "train_loss": loss}) + "\n")
            if val is not None and ((k + 1) % max(args.val_every, 1) == 0 or k + 1 == n_steps):
                logf.write(json.dumps({"step": k + 1, "val_loss": validate()}) + "\n")
            logf.flush()
        if first_step_s is None:
            first_step_s = t1 - T_LAUNCH
        if k >= args.warmup:
            times.append(t1 - t0)
        log(f"step {k + 1}: loss {loss:.4f}, {(t1 - t0) * 1e3:.1f} ms")
    step_s = statistics.median(times)
    name = args.name or os.path.splitext(os.path.basename(args.config))[0]
    print(json.dumps({"impl": "pytorch", "config": name, "device": torch.cuda.get_device_name(),
                      "tokens_per_s": round(t.batch_tokens / step_s),
                      "step_ms": round(step_s * 1e3, 2), "first_step_s": round(first_step_s, 2),
                      "params": n_params, "active_params": active, "warmup": args.warmup,
                      "steps": args.steps, "loss": round(loss, 4)}), flush=True)


if __name__ == "__main__":
    main()
