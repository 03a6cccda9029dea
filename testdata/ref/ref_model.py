"""ref_model: a small PyTorch model of moe-train's transformer, for the parity check.

This is the readable float32 reference that moe-train's CPU backend is compared
against (testdata/ref/README.md). It is built from the same JSON config
({"model": {...}, "moe": {...}, "train": {...}}, man5/moe-config.5) and its
state_dict names and shapes are those of moe-train's parameter buffer
(lib/model.c), so a safetensors file that moe-train writes loads with
load_state_dict(strict=True).

The architecture is the parameter-golf baseline (openai/parameter-golf
train_gpt.py) plus the options of lib/model.c: partial RoPE, LeakyReLU(0.5)^2
and SwiGLU (mlp.fc.weight is [2F, C], gate rows first), untied head, and the
mixture-of-experts feed-forward of lib/moe.*.
"""

import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# RMSNorm epsilon everywhere: float32's machine epsilon (F.rms_norm's default
# for float32 input, GK_RMSNORM_EPS in lib/ops.h).
RMS_EPS = torch.finfo(torch.float32).eps
LEAKY_SLOPE = 0.5

# The defaults of lib/config.c (man5/moe-config.5): the parameter-golf baseline.
DEFAULTS = {
    "model": {
        "vocab": 1024, "n_layer": 9, "d_model": 512, "n_head": 8, "n_kv_head": 4,
        "mlp_mult": 2, "mlp_hidden": 0, "activation": "relu2", "tie_embeddings": True,
        "tied_embed_init_std": 0.005, "logit_softcap": 30.0, "rope_base": 10000.0,
        "rope_dims": 0, "qk_gain_init": 1.5, "seq_len": 1024,
    },
    "moe": {
        "n_experts": 1, "n_shared": 0, "top_k": 1, "expert_hidden": 0,
        "router": "sigmoid_bias", "bias_update_rate": 0.001,
    },
    "train": {
        "steps": 20000, "max_seconds": 600.0, "batch_tokens": 524288, "grad_accum": 8,
        "prime_steps": 20, "lr_schedule": "linear_warmdown", "schedule_clock": "auto",
        "lr_warmup_steps": 0, "warmdown_steps": 1200, "lr_final_scale": 0.0,
        "embed_lr": 0.6, "head_lr": 0.008, "tied_embed_lr": 0.05, "matrix_lr": 0.04,
        "scalar_lr": 0.04, "muon_momentum": 0.95, "muon_momentum_warmup_start": 0.85,
        "muon_momentum_warmup_steps": 500, "muon_backend_steps": 5, "muon_nesterov": True,
        "muon_weight_decay": 0.0, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8,
        "adam_weight_decay": 0.0, "grad_clip_norm": 0.0, "seed": 1337, "val_every": 1000,
        "val_batch_tokens": 524288, "val_tokens": 0, "log_every": 200, "ckpt_every": 0,
    },
}


class Config:
    """The effective config: DEFAULTS overridden by a JSON file, as attributes
    cfg.model.X, cfg.moe.X, cfg.train.X. Unknown sections or keys are errors
    (moe-train rejects them too, so a file both accept means the same)."""

    class Section:
        def __init__(self, values):
            self.__dict__.update(values)

    def __init__(self, overrides=None):
        merged = {sec: dict(keys) for sec, keys in DEFAULTS.items()}
        for sec, keys in (overrides or {}).items():
            if sec not in merged:
                raise ValueError(f"config: unknown section {sec!r}")
            for key, value in keys.items():
                if key not in merged[sec]:
                    raise ValueError(f"config: unknown key {sec}.{key}")
                merged[sec][key] = value
        self.model = Config.Section(merged["model"])
        self.moe = Config.Section(merged["moe"])
        self.train = Config.Section(merged["train"])
        m = self.model
        if m.d_model % m.n_head or m.n_head % m.n_kv_head:
            raise ValueError("config: heads do not divide d_model / n_head")
        if m.logit_softcap <= 0:
            raise ValueError("config: logit_softcap must be positive (as in lib/model.c)")

    @staticmethod
    def load(path):
        with open(path) as f:
            return Config(json.load(f))

    # derived sizes, as the gk_config_* helpers of lib/config.h
    @property
    def head_dim(self):
        return self.model.d_model // self.model.n_head

    @property
    def rope_dims(self):
        return self.model.rope_dims or self.head_dim

    @property
    def mlp_hidden(self):
        return self.model.mlp_hidden or self.model.mlp_mult * self.model.d_model

    @property
    def expert_hidden(self):
        return self.moe.expert_hidden or self.mlp_hidden

    @property
    def is_moe(self):
        return self.moe.n_experts != 1 or self.moe.n_shared != 0


def rms_norm(x):
    return F.rms_norm(x, (x.size(-1),), eps=RMS_EPS)


def rope_tables(seq_len, rope_dims, base, device):
    """cos, sin [T, rope_dims/2] in float32: inv_freq = 1 / base^(2i/r), angle =
    t * inv_freq, every step a float32 operation (lib/ops_impl.h gk_rope_table)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims))
    t = torch.arange(seq_len, dtype=torch.float32)
    ang = torch.outer(t, inv_freq)
    return ang.cos().to(device), ang.sin().to(device)


def apply_rope(x, cos, sin, rope_dims):
    """x [B, H, T, D]: rotate the first rope_dims dims of each head as two halves
    (x1 = [:r/2], x2 = [r/2:r]); the rest pass through."""
    half = rope_dims // 2
    x1, x2, rest = x[..., :half], x[..., half:rope_dims], x[..., rope_dims:]
    c, s = cos[None, None], sin[None, None]
    return torch.cat((x1 * c + x2 * s, -x1 * s + x2 * c, rest), dim=-1)


def activation(h, kind):
    if kind == "relu2":
        return torch.relu(h).square()
    if kind == "leaky_relu2":
        return F.leaky_relu(h, LEAKY_SLOPE).square()
    if kind == "swiglu":
        gate, up = h.chunk(2, dim=-1)  # gate rows of fc.weight come first
        return F.silu(gate) * up
    raise ValueError(f"unknown activation {kind!r}")


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H, KV, D = cfg.model.d_model, cfg.model.n_head, cfg.model.n_kv_head, cfg.head_dim
        self.H, self.KV, self.D, self.R = H, KV, D, cfg.rope_dims
        self.c_q = nn.Linear(C, C, bias=False)
        self.c_k = nn.Linear(C, KV * D, bias=False)
        self.c_v = nn.Linear(C, KV * D, bias=False)
        self.proj = nn.Linear(C, C, bias=False)
        self.q_gain = nn.Parameter(torch.full((H,), float(cfg.model.qk_gain_init)))

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.KV, self.D).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.KV, self.D).transpose(1, 2)
        q = apply_rope(rms_norm(q), cos, sin, self.R)
        k = apply_rope(rms_norm(k), cos, sin, self.R)
        q = q * self.q_gain[None, :, None, None]
        # GQA by repeating each kv head for its group of query heads; plain
        # softmax attention with scale 1/sqrt(D) and a causal mask, written out
        # so that no fused SDPA backend changes the arithmetic.
        group = self.H // self.KV
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.D)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """proj(act(fc(x))); fc has 2F rows for SwiGLU (gate, then up)."""

    def __init__(self, C, F_, act):
        super().__init__()
        self.act = act
        self.fc = nn.Linear(C, 2 * F_ if act == "swiglu" else F_, bias=False)
        self.proj = nn.Linear(F_, C, bias=False)

    def forward(self, x):
        return self.proj(activation(self.fc(x), self.act))


def top_k(key, k):
    """Indices [N, k] of the k largest keys of each row, ties to the lower index
    (lib/moe_impl.h's choice; torch.topk leaves ties unspecified)."""
    return torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :k]


class MoE(nn.Module):
    """n_experts routed experts (each token uses top_k) plus n_shared experts that
    every token uses. Router in float32 (the whole model is float32 here).

    sigmoid_bias: scores s = sigmoid(x W_r^T); the top_k of s + router_bias are
      chosen; their weights are the chosen s normalised to sum 1. router_bias is
      a buffer (no gradient) moved after each optimizer step by
      update_bias(): bias += rate * sign(mean_load - load).
    softmax: p = softmax(x W_r^T); the top_k of p, weights the chosen p
      renormalised to sum 1.
    Ties in the choice go to the lower expert index. With one routed expert
    (n_experts 1, n_shared > 0) every token takes it with weight 1 and there is
    no router. The router weight is trained by the scalar Adam, not Muon
    (lib/moe.h says why).
    token: expert = token_id mod n_experts, weight 1; no router weights."""

    def __init__(self, cfg):
        super().__init__()
        C, Fe, act = cfg.model.d_model, cfg.expert_hidden, cfg.model.activation
        self.E, self.top_k, self.kind = cfg.moe.n_experts, cfg.moe.top_k, cfg.moe.router
        self.rate = cfg.moe.bias_update_rate
        self.experts = nn.ModuleList(MLP(C, Fe, act) for _ in range(self.E))
        self.shared = nn.ModuleList(MLP(C, Fe, act) for _ in range(cfg.moe.n_shared))
        self.learned = self.E > 1 and self.kind != "token"
        if self.learned:
            self.router = nn.Linear(C, self.E, bias=False)
        if self.E > 1 and self.kind == "sigmoid_bias":
            self.register_buffer("router_bias", torch.zeros(self.E))
        # tokens routed to each expert since the last update_bias (all micro-batches)
        self.load = torch.zeros(self.E, dtype=torch.float64)

    def route(self, x, tokens):
        """(idx [N, k], weight [N, k]) for rows x [N, C] and their token ids [N]."""
        if self.E == 1:
            ones = torch.ones(x.size(0), 1, device=x.device, dtype=x.dtype)
            return torch.zeros(x.size(0), 1, dtype=torch.long, device=x.device), ones
        if self.kind == "token":
            idx = (tokens % self.E).unsqueeze(1)
            return idx, torch.ones(idx.shape, device=x.device, dtype=x.dtype)
        logits = self.router(x.float())
        if self.kind == "sigmoid_bias":
            s = torch.sigmoid(logits)
            idx = top_k(s.detach() + self.router_bias, self.top_k)
            w = s.gather(1, idx)
            return idx, w / w.sum(dim=-1, keepdim=True)
        # softmax: the top_k of the probabilities are the top_k of the logits;
        # renormalised over the chosen, the weights are a softmax of their logits
        idx = top_k(logits.detach(), self.top_k)
        return idx, torch.softmax(logits.gather(1, idx), dim=-1)

    def forward(self, x, tokens):
        B, T, C = x.shape
        xf, tf = x.reshape(-1, C), tokens.reshape(-1)
        idx, w = self.route(xf, tf)
        self.load += torch.bincount(idx.reshape(-1), minlength=self.E).double().cpu()
        out = torch.zeros_like(xf)
        for e, expert in enumerate(self.experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, w[rows, slot, None] * expert(xf[rows]))
        for expert in self.shared:
            out = out + expert(xf)
        return out.view(B, T, C)

    @torch.no_grad()
    def update_bias(self):
        """After an optimizer step: move each bias toward balancing the load."""
        if hasattr(self, "router_bias"):
            # sign(mean - load_e) as sign(total - E load_e), exact in integers
            delta = torch.sign(self.load.sum() - self.E * self.load)
            self.router_bias += (self.rate * delta).float().to(self.router_bias.device)
        self.load.zero_()


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg.model.d_model
        self.attn = Attention(cfg)
        if cfg.is_moe:
            self.moe = MoE(cfg)
        else:
            self.mlp = MLP(C, cfg.mlp_hidden, cfg.model.activation)
        self.attn_scale = nn.Parameter(torch.ones(C))
        self.mlp_scale = nn.Parameter(torch.ones(C))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(C), torch.zeros(C))))

    def forward(self, x, x0, tokens, cos, sin):
        x = self.resid_mix[0] * x + self.resid_mix[1] * x0
        x = x + self.attn_scale * self.attn(rms_norm(x), cos, sin)
        h = rms_norm(x)
        ff = self.moe(h, tokens) if hasattr(self, "moe") else self.mlp(h)
        return x + self.mlp_scale * ff


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.tok_emb = nn.Embedding(m.vocab, m.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(m.n_layer))
        self.n_enc = m.n_layer // 2
        self.n_skip = min(self.n_enc, m.n_layer - self.n_enc)
        if self.n_skip:
            self.skip_weights = nn.Parameter(torch.ones(self.n_skip, m.d_model))
        if not m.tie_embeddings:
            self.lm_head = nn.Linear(m.d_model, m.vocab, bias=False)
        self.rope = None  # (T, device) -> cos, sin, built on first use

    def forward(self, tokens, targets):
        B, T = tokens.shape
        if self.rope is None or self.rope[0] != (T, tokens.device):
            self.rope = ((T, tokens.device),
                         rope_tables(T, self.cfg.rope_dims, self.cfg.model.rope_base, tokens.device))
        cos, sin = self.rope[1]
        x = x0 = rms_norm(self.tok_emb(tokens))
        skips = []
        for i, block in enumerate(self.blocks):
            j = i - self.n_enc  # decoder index
            if 0 <= j < self.n_skip:
                x = x + self.skip_weights[j] * skips.pop()
            x = block(x, x0, tokens, cos, sin)
            if i < self.n_enc:
                skips.append(x)
        x = rms_norm(x)
        head = self.lm_head.weight if hasattr(self, "lm_head") else self.tok_emb.weight
        cap = self.cfg.model.logit_softcap
        logits = cap * torch.tanh(F.linear(x, head) / cap)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))

    def moe_layers(self):
        return [b.moe for b in self.blocks if hasattr(b, "moe")]

    def load_safetensors(self, path, log=None):
        """Load every tensor of the model by name from PATH (safetensors). Missing
        tensors are an error, except router_bias (zero when absent: it is a
        buffer that starts at 0). Extra names (e.g. optimizer state) are
        ignored and listed through LOG. Shapes must match exactly."""
        from safetensors.torch import load_file

        stored = load_file(path)
        own = self.state_dict()
        missing = [n for n in own if n not in stored and not n.endswith("router_bias")]
        if missing:
            raise KeyError(f"{path}: missing tensors: {', '.join(missing[:8])}"
                           + (" ..." if len(missing) > 8 else ""))
        extra = sorted(n for n in stored if n not in own)
        if extra and log:
            log(f"{path}: ignoring {len(extra)} tensors not in the model: {', '.join(extra[:6])}"
                + (" ..." if len(extra) > 6 else ""))
        with torch.no_grad():
            for name, t in own.items():
                if name not in stored:
                    t.zero_()
                    continue
                src = stored[name]
                if tuple(src.shape) != tuple(t.shape):
                    raise ValueError(f"{path}: {name}: shape {tuple(src.shape)}, model has "
                                     f"{tuple(t.shape)}")
                t.copy_(src.to(torch.float32))
