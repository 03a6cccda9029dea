"""ref_train: train ref_model.GPT for N steps in float32 and log the loss per step.

    python testdata/ref/ref_train.py --config CFG.json --init INIT.safetensors \
        --shards 'DIR/train_*.bin' [--steps 50] [--device cpu|cuda] > ref.jsonl

Reads the same config moe-train reads, starts from moe-train's initial weights
(a safetensors file), takes batches from the shards in the order moe-train's
loader does (train_gpt.py's TokenStream: shards in sorted order, read
sequentially, wrapping around; one rank), and runs the optimizer split of
train_gpt.py: Muon for the 2-D block matrices (experts included), Adam for
the token embedding, the untied head, the vectors/scalars and the MoE router,
with the schedule's learning-rate scale. Newton-Schulz runs in float32 (train_gpt.py
uses bf16), as lib/optim.c does.

Prints one JSON line per step on stdout, {"step": k, "train_loss": ..., ...},
where step k's loss is the mean loss of the k-th step's batch before its update
(train_gpt.py's and moe-train's convention); compare.py reads it.
"""

import argparse
import glob
import json
import math
import sys

import numpy as np
import torch

from ref_model import GPT, Config

SHARD_MAGIC, SHARD_VERSION = 20240520, 1


def log(msg):
    print(f"ref_train: {msg}", file=sys.stderr, flush=True)


# ---- data: llm.c-format shards, read as one endless stream ----------------------


def read_shard(path):
    """256 little-endian int32 header (magic, version, count, ...), then count uint16."""
    header = np.fromfile(path, dtype="<i4", count=256)
    if header.size != 256 or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise ValueError(f"{path}: not a version-1 token shard")
    count = int(header[2])
    tokens = np.fromfile(path, dtype="<u2", count=count, offset=256 * 4)
    if tokens.size != count:
        raise ValueError(f"{path}: header says {count} tokens, file has {tokens.size}")
    return tokens


class TokenStream:
    """The shards matching a glob, in sorted order, back to back, forever."""

    def __init__(self, pattern):
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise FileNotFoundError(f"no shard matches {pattern!r}")
        self.index, self.pos = 0, 0
        self.tokens = read_shard(self.files[0])

    def take(self, n):
        parts = []
        while n > 0:
            if self.pos >= self.tokens.size:
                self.index = (self.index + 1) % len(self.files)
                self.tokens, self.pos = read_shard(self.files[self.index]), 0
                continue
            k = min(n, self.tokens.size - self.pos)
            parts.append(self.tokens[self.pos:self.pos + k])
            self.pos, n = self.pos + k, n - k
        return np.concatenate(parts)


def next_batch(stream, tokens_per_micro, seq_len, device):
    """One micro-batch: a span of tokens_per_micro + 1 tokens; x = span[:-1],
    y = span[1:], each reshaped to [tokens_per_micro / seq_len, seq_len]."""
    span = torch.from_numpy(stream.take(tokens_per_micro + 1).astype(np.int64))
    x = span[:-1].view(-1, seq_len).to(device)
    y = span[1:].view(-1, seq_len).to(device)
    return x, y


# ---- optimizers -----------------------------------------------------------------


def newton_schulz(G, steps, eps=1e-7, dtype=torch.float32):
    """Approximately orthogonalise G with the quintic iteration of train_gpt.py
    (coefficients 3.4445, -4.7750, 2.0315), all in DTYPE (float32 here; bf16 is
    train_gpt.py's): X = G / (|G|_F + eps), transposed when G has more rows than
    columns so that X X^T is the small side."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(dtype)
    X = X / (X.norm() + eps)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.T if tall else X


class Muon:
    """Momentum (optionally Nesterov) on the gradient, then the orthogonalised
    update scaled by max(1, rows/cols)^0.5, applied at lr; decoupled weight decay
    p *= 1 - lr * wd first, when wd > 0."""

    def __init__(self, params, backend_steps, nesterov, weight_decay):
        self.params = params
        self.steps, self.nesterov, self.wd = backend_steps, nesterov, weight_decay
        self.bufs = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, lr, momentum):
        for p, buf in zip(self.params, self.bufs):
            g = p.grad
            buf.mul_(momentum).add_(g)
            if self.nesterov:
                g = g.add(buf, alpha=momentum)
            else:
                g = buf
            u = newton_schulz(g, self.steps)
            u = u * max(1.0, p.size(0) / p.size(1)) ** 0.5
            if self.wd > 0:
                p.mul_(1 - lr * self.wd)
            p.add_(u, alpha=-lr)


def lr_scale(step, t):
    """The learning-rate multiplier before 0-based step STEP on the steps clock
    (lib/schedule.h gk_lr_scale). With f = lr_final_scale: linear_warmdown is 1,
    then f + (1 - f) (steps - STEP) / warmdown_steps over the last
    warmdown_steps (train_gpt.py's lr_mul), f from step `steps` on; cosine is
    f + (1 - f) (1 + cos(pi p)) / 2 with p = (STEP - W) / (steps - W) clamped
    to [0, 1]; constant is 1. During a warmup of W = lr_warmup_steps the scale
    is then multiplied by (STEP + 1) / W."""
    n, d, w, f = t.steps, t.warmdown_steps, t.lr_warmup_steps, t.lr_final_scale
    if t.lr_schedule == "linear_warmdown":
        if d <= 0 or step < max(n - d, 0):
            frac = 1.0
        elif step >= n:
            frac = 0.0
        else:
            frac = max((n - step) / d, 0.0)
        s = f + (1 - f) * frac
    elif t.lr_schedule == "cosine":
        p = (step - w) / (n - w) if n - w > 0 else 1.0
        p = min(max(p, 0.0), 1.0)
        s = f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p))
    else:
        s = 1.0
    if w > 0 and step < w:
        s *= (step + 1) / w
    return s


def build_optimizers(model, cfg):
    """train_gpt.py's split: 2-D tensors inside blocks (attention, MLP, experts)
    to Muon; the token embedding, the untied head, and every vector or control
    tensor (q_gain, attn_scale, mlp_scale, resid_mix, skip_weights, and the MoE
    router weight) to Adam. Returns (muon, [(adam, base_lr), ...])."""
    t = cfg.train
    # moe.router.weight is 2-D but goes to the scalar Adam, as lib/model.c puts it
    control = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "moe.router")
    matrices, scalars = [], []
    for name, p in model.blocks.named_parameters():
        (matrices if p.ndim == 2 and not any(c in name for c in control) else scalars).append(p)
    if hasattr(model, "skip_weights"):
        scalars.append(model.skip_weights)
    Adam = torch.optim.AdamW if t.adam_weight_decay > 0 else torch.optim.Adam
    kw = dict(betas=(t.beta1, t.beta2), eps=t.adam_eps, foreach=False)
    if t.adam_weight_decay > 0:
        kw["weight_decay"] = t.adam_weight_decay
    tok_lr = t.tied_embed_lr if cfg.model.tie_embeddings else t.embed_lr
    adams = [(Adam([model.tok_emb.weight], lr=tok_lr, **kw), tok_lr)]
    if hasattr(model, "lm_head"):
        adams.append((Adam([model.lm_head.weight], lr=t.head_lr, **kw), t.head_lr))
    adams.append((Adam(scalars, lr=t.scalar_lr, **kw), t.scalar_lr))
    muon = Muon(matrices, t.muon_backend_steps, t.muon_nesterov, t.muon_weight_decay)
    return muon, adams


# ---- training -------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="moe-train JSON config")
    ap.add_argument("--init", required=True, help="initial weights (safetensors)")
    ap.add_argument("--shards", required=True, help="glob of training shards (quote it)")
    ap.add_argument("--steps", type=int, default=50, help="steps to run (default 50)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--save", help="write the final weights here (safetensors)")
    args = ap.parse_args()

    # float32 everywhere: no TF32 in matmuls or convolutions
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)

    cfg = Config.load(args.config)
    t = cfg.train
    clock = t.schedule_clock
    if clock == "wallclock" or (clock == "auto" and t.max_seconds > 0):
        log("warning: the config's schedule runs on the wall clock, which no two runs "
            "share; this reference uses the step clock (set train.max_seconds 0 or "
            "train.schedule_clock \"steps\" on both sides)")
    world = 1
    if t.batch_tokens % (world * t.grad_accum * cfg.model.seq_len):
        raise SystemExit("ref_train: batch_tokens is not whole sequences per micro-batch")
    per_micro = t.batch_tokens // (world * t.grad_accum)

    device = torch.device(args.device)
    model = GPT(cfg).to(device)
    model.load_safetensors(args.init, log=log)
    model.train()
    muon, adams = build_optimizers(model, cfg)
    params = [p for p in model.parameters()]
    stream = TokenStream(args.shards)
    log(f"{sum(p.numel() for p in params)} parameters, {len(muon.params)} Muon matrices, "
        f"{per_micro} tokens per micro-batch x {t.grad_accum}, device {device}")

    for step in range(args.steps):
        scale = lr_scale(step, t)
        # Zero tensors, not None: an expert that no token reached has a zero
        # gradient, and its momentum and Adam moments still move, as in
        # moe-train (torch's optimizers would skip a None gradient entirely).
        for p in params:
            p.grad = torch.zeros_like(p)
        total = 0.0
        for _ in range(t.grad_accum):
            x, y = next_batch(stream, per_micro, cfg.model.seq_len, device)
            loss = model(x, y)
            (loss / t.grad_accum).backward()
            total += loss.item()
        train_loss = total / t.grad_accum
        if not math.isfinite(train_loss):
            raise SystemExit(f"ref_train: loss {train_loss} at step {step + 1}")

        if t.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip_norm)
        w = t.muon_momentum_warmup_steps
        frac = min(step / w, 1.0) if w > 0 else 1.0
        momentum = (1 - frac) * t.muon_momentum_warmup_start + frac * t.muon_momentum
        muon.step(t.matrix_lr * scale, momentum)
        for opt, base_lr in adams:
            for group in opt.param_groups:
                group["lr"] = base_lr * scale
            opt.step()
        loads = [[int(n) for n in moe.load.tolist()] for moe in model.moe_layers()]
        for moe in model.moe_layers():
            moe.update_bias()

        rec = {"step": step + 1, "train_loss": train_loss, "lr_scale": scale}
        if loads:
            rec["expert_load"] = loads
        print(json.dumps(rec), flush=True)

    if args.save:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, args.save)
        log(f"wrote {args.save}")


if __name__ == "__main__":
    main()
