#!/usr/bin/env python3
"""PyTorch reference timings for lathe bench, on the same shapes lathe measures.

Reads one JSON spec from stdin (or from the file given as the first argument):

    {"device": "cpu" | "cuda", "dtype": "float32" | "bfloat16" (optional),
     "threads": 0, "warmup": 1, "min_repeats": 3, "max_repeats": 20, "budget_s": 0.25,
     "cases": [{"id": "...", "kind": "nf4_matmul" | "lora_fwd" | "lora_bwd",
                "m": 512, "n": 896, "k": 896, "r": 16}]}

and prints one JSON object (the last line of stdout):

    {"torch": "2.3.0", "device": "cpu", "device_name": "...", "dtype": "float32", "threads": 2,
     "bitsandbytes": null | "0.43.1", "peft": null | "0.11.1",
     "cases": {"<id>": {"median": s, "min": s, "max": s, "q1": s, "q3": s, "n": k, "impl": "..."}},
     "errors": {"<id>": "message"}}

A "train_step" case times one training step of a Llama-shaped decoder the size lathe trains
({"kind": "train_step", "method": "lora" | "qlora", "hidden", "intermediate", "heads", "kv_heads",
"layers", "vocab", "batch", "seq", "r"}; tied embeddings, LoRA of rank r and alpha 2r on every
linear layer of every block, float32): forward, cross-entropy, backward, clip_grad_norm_(1.0),
torch.optim.AdamW's step, and the loss read back. LoRA goes through PEFT when it imports, else
it is written by hand over the dense base; QLoRA's base is bitsandbytes' Linear4bit (NF4) when
bitsandbytes runs on CUDA, else the dense base (the case's "impl" says which). On the CPU with
oneDNN the frozen base projections and the tied output layer run as oneDNN linears (forward and
the backward's dx), as the kernel cases do.

What each kind computes (W: [n, k] 4-bit NF4 in lathe, here dense in `dtype` unless bitsandbytes
runs on CUDA; x: [m, k]; A: [r, k]; B: [n, r]; s = 2):
  nf4_matmul  y = x·Wᵀ             (bitsandbytes matmul_4bit on NF4 when importable on CUDA,
                                     else the dequantized weight in `dtype`)
  lora_fwd    y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (PEFT's LoRA Linear when importable, else the same ops by hand)
  lora_bwd    dx = dy·W + s·(dy·B)·A, dA = s·(dy·B)ᵀ·x, dB = s·dyᵀ·(x·Aᵀ)  (explicit, as lathe's op)
On the CPU, float32 matmuls go through oneDNN (torch.utils.mkldnn's linear) when torch has it:
Debian's python3-torch links the reference BLAS (BLAS_INFO=generic), 20-50x slower than oneDNN,
which would flatter lathe. Set "cpu_matmul": "blas" in the spec to time torch's BLAS path instead.
Timing: warm-up runs, then repeats until min_repeats and budget_s are both reached (at most
max_repeats), each run ended by torch.cuda.synchronize() on CUDA.
"""
import json
import os
import statistics
import sys
import time

SCALE = 2.0


def quantiles(xs):
    s = sorted(xs)

    def q(p):
        pos = p * (len(s) - 1)
        lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    return {"median": q(0.5), "min": s[0], "max": s[-1], "q1": q(0.25), "q3": q(0.75), "n": len(s)}


def main():
    spec = json.load(open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin)
    out = {"cases": {}, "errors": {}}
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - report any import failure
        out["error"] = "torch is not importable: %s" % e
        print(json.dumps(out))
        return
    out["torch"] = torch.__version__
    dev = spec.get("device", "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        out["error"] = "CUDA is not available to torch %s" % torch.__version__
        out["device"] = dev
        print(json.dumps(out))
        return
    threads = int(spec.get("threads") or 0) or os.cpu_count() or 1
    if dev == "cpu":
        torch.set_num_threads(threads)
    out["threads"] = torch.get_num_threads()
    out["device"] = dev
    out["device_name"] = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
    dtype_name = spec.get("dtype") or ("bfloat16" if dev == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    out["dtype"] = dtype_name
    bnb = peft = None
    try:
        import bitsandbytes as bnb  # noqa: F401
        out["bitsandbytes"] = bnb.__version__
    except Exception:  # noqa: BLE001
        bnb = None
        out["bitsandbytes"] = None
    try:
        import peft  # noqa: F401
        out["peft"] = peft.__version__
    except Exception:  # noqa: BLE001
        peft = None
        out["peft"] = None

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def timeit(fn):
        for _ in range(max(int(spec.get("warmup", 1)), 1)):
            fn()
        sync()
        samples = []
        start = time.perf_counter()
        mn, mx = max(int(spec.get("min_repeats", 3)), 1), int(spec.get("max_repeats", 20))
        budget = float(spec.get("budget_s", 0.25))
        while len(samples) < mn or (time.perf_counter() - start < budget and len(samples) < mx):
            t0 = time.perf_counter()
            fn()
            sync()
            samples.append(time.perf_counter() - t0)
        return samples

    gen = torch.Generator(device="cpu").manual_seed(1)
    cfg = torch.__config__.show()
    out["blas_info"] = cfg.split("BLAS_INFO=", 1)[1].split(",", 1)[0] if "BLAS_INFO=" in cfg else None
    use_dnn = (dev == "cpu" and dtype == torch.float32 and spec.get("cpu_matmul", "onednn") == "onednn"
               and torch.backends.mkldnn.is_available())
    out["cpu_matmul"] = "onednn" if use_dnn else ("blas" if dev == "cpu" else None)
    mm_name = "oneDNN float32 linear" if use_dnn else "%s matmul" % dtype_name

    def const_linear(w):
        """x -> x·wᵀ for a constant w (converted to oneDNN's layout once)."""
        if use_dnn:
            wm = w.contiguous().to_mkldnn()
            return lambda x: torch._C._nn.mkldnn_linear(x.contiguous().to_mkldnn(), wm, None).to_dense()
        return lambda x: x @ w.t()

    def mm(a, b):
        """a·b for operands computed per call."""
        if use_dnn:
            return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b.t().contiguous().to_mkldnn(), None).to_dense()
        return a @ b

    def rand(*shape):
        return ((torch.rand(*shape, generator=gen) - 0.5) * 0.1).to(device=dev, dtype=dtype)

    def base_weight(n, k):
        """Returns (matmul function x -> x·Wᵀ, dense W for the backward, implementation name)."""
        w = rand(n, k)
        if bnb is not None and dev == "cuda":
            try:
                import bitsandbytes.functional as F
                packed, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4")
                return (lambda x: bnb.matmul_4bit(x, packed.t(), quant_state=state)), w, "bitsandbytes matmul_4bit nf4"
            except Exception as e:  # noqa: BLE001 - fall back to the dequantized weight
                out.setdefault("notes", []).append("bitsandbytes failed (%s); dense weights used" % e)
        return const_linear(w), w, "dense %s (dequantized weight)" % mm_name

    def peft_linear(n, k, r):
        """A PEFT LoRA Linear around a dense base layer, or None."""
        if peft is None:
            return None
        try:
            from peft import LoraConfig, get_peft_model

            class Holder(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.proj = torch.nn.Linear(k, n, bias=False)

                def forward(self, x):
                    return self.proj(x)

            m = get_peft_model(Holder(), LoraConfig(r=r, lora_alpha=int(SCALE * r), target_modules=["proj"], lora_dropout=0.0))
            return m.to(device=dev, dtype=dtype)
        except Exception as e:  # noqa: BLE001
            out.setdefault("notes", []).append("PEFT LoRA layer failed (%s); plain ops used" % e)
            return None

    class FrozenLinear(torch.autograd.Function):
        """x·Wᵀ for a frozen W through oneDNN, forward and the backward's dx."""

        @staticmethod
        def forward(ctx, x, fwd, bwd):
            ctx.bwd = bwd
            return fwd(x)

        @staticmethod
        def backward(ctx, dy):
            return ctx.bwd(dy), None, None

    def train_step(c):
        """(step function, implementation) for one train_step case."""
        import math
        import torch.nn.functional as F
        H, I, nh, nkv = c["hidden"], c["intermediate"], c["heads"], c["kv_heads"]
        L, V, B, T, r = c["layers"], c["vocab"], c["batch"], c["seq"], c["r"]
        hd, qlora = H // nh, c["method"] == "qlora"
        f32 = torch.float32
        tgen = torch.Generator(device="cpu").manual_seed(2)

        def randw(n, k):
            return ((torch.rand(n, k, generator=tgen) - 0.5) * (2.0 / math.sqrt(k))).to(device=dev, dtype=f32)

        names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        shapes = {"q_proj": (H, H), "k_proj": (nkv * hd, H), "v_proj": (nkv * hd, H), "o_proj": (H, H),
                  "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
        dnn = dev == "cpu" and torch.backends.mkldnn.is_available() and spec.get("cpu_matmul", "onednn") == "onednn"
        use_bnb = qlora and bnb is not None and dev == "cuda"

        class Base(torch.nn.Module):
            """A frozen projection: dense (oneDNN on the CPU) or bitsandbytes NF4."""

            def __init__(self, n, k):
                super().__init__()
                w = randw(n, k)
                if use_bnb:
                    self.lin = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=f32, quant_type="nf4")
                    self.lin.weight = bnb.nn.Params4bit(w.cpu(), requires_grad=False, quant_type="nf4")
                    self.lin = self.lin.to(dev)
                    self.f = lambda x: self.lin(x)
                elif dnn:
                    wf, wb = w.contiguous().to_mkldnn(), w.t().contiguous().to_mkldnn()
                    fwd = lambda x: torch._C._nn.mkldnn_linear(x.reshape(-1, k).contiguous().to_mkldnn(), wf, None).to_dense().reshape(*x.shape[:-1], n)
                    bwd = lambda d: torch._C._nn.mkldnn_linear(d.reshape(-1, n).contiguous().to_mkldnn(), wb, None).to_dense().reshape(*d.shape[:-1], k)
                    self.f = lambda x: FrozenLinear.apply(x, fwd, bwd)
                else:
                    self.lin = torch.nn.Linear(k, n, bias=False).to(dev)
                    self.lin.weight = torch.nn.Parameter(w, requires_grad=False)
                    self.f = lambda x: self.lin(x)

            def forward(self, x):
                return self.f(x)

        use_peft = peft is not None and not dnn

        class LoRA(torch.nn.Module):
            def __init__(self, n, k):
                super().__init__()
                self.base = Base(n, k)
                self.A = torch.nn.Parameter(randw(r, k))
                self.B = torch.nn.Parameter(randw(n, r) * 0.1)

            def forward(self, x):
                return self.base(x) + SCALE * ((x @ self.A.t()) @ self.B.t())

        class Block(torch.nn.Module):
            def __init__(self):
                super().__init__()
                for name in names:
                    # PEFT wraps the base's Linear ("lin") itself, after the blocks are built.
                    setattr(self, name, Base(*shapes[name]) if use_peft else LoRA(*shapes[name]))

            def forward(self, x, cos, sin):
                h = F.normalize(x, dim=-1) * math.sqrt(H)  # RMSNorm with unit gain
                q = self.q_proj(h).view(B, T, nh, hd).transpose(1, 2)
                k = self.k_proj(h).view(B, T, nkv, hd).transpose(1, 2)
                v = self.v_proj(h).view(B, T, nkv, hd).transpose(1, 2)

                def rope(t):
                    t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
                    return torch.cat([t1 * cos - t2 * sin, t2 * cos + t1 * sin], dim=-1)

                q, k = rope(q), rope(k)
                k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
                s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
                s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool, device=dev), 1), float("-inf"))
                a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, H)
                x = x + self.o_proj(a)
                h = F.normalize(x, dim=-1) * math.sqrt(H)
                return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

        blocks = torch.nn.ModuleList([Block() for _ in range(L)])
        how = "by hand"
        if use_peft:
            from peft import LoraConfig, inject_adapter_in_model
            blocks = inject_adapter_in_model(LoraConfig(r=r, lora_alpha=2 * r, target_modules=["lin"], lora_dropout=0.0), blocks)
            for name, p in blocks.named_parameters():
                p.requires_grad = "lora_" in name
            how = "through PEFT %s" % peft.__version__
        emb = randw(V, H)
        # The tied output layer: logits = x·Eᵀ over the frozen embedding.
        if dnn:
            ef, eb = emb.contiguous().to_mkldnn(), emb.t().contiguous().to_mkldnn()
            hfwd = lambda x: torch._C._nn.mkldnn_linear(x.reshape(-1, H).contiguous().to_mkldnn(), ef, None).to_dense()
            hbwd = lambda d: torch._C._nn.mkldnn_linear(d.contiguous().to_mkldnn(), eb, None).to_dense().reshape(B, T, H)
            head = lambda x: FrozenLinear.apply(x, hfwd, hbwd)
        else:
            head = lambda x: x.reshape(-1, H) @ emb.t()
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=f32, device=dev) / hd))
        ang = torch.arange(T, dtype=f32, device=dev)[:, None] * inv[None, :]
        cos, sin = ang.cos(), ang.sin()
        ids = torch.randint(0, V, (B, T), generator=tgen).to(dev)
        targets = torch.roll(ids, -1, dims=1)
        params = [p for p in blocks.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        impl = "LoRA %s over a %s base" % (how, "bitsandbytes NF4 Linear4bit" if use_bnb else ("dense oneDNN float32" if dnn else "dense float32"))
        if qlora and not use_bnb:
            impl += " (bitsandbytes not available on %s: QLoRA's 4-bit base not reproduced)" % dev
        if peft is not None and dnn:
            impl += "; PEFT %s not used: its LoRA layers wrap torch Linear modules, this base is oneDNN's" % peft.__version__

        def step():
            x = emb[ids]
            for blk in blocks:
                x = blk(x, cos, sin)
            x = F.normalize(x, dim=-1) * math.sqrt(H)
            loss = F.cross_entropy(head(x), targets.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

        return step, impl

    for c in spec.get("cases", []):
        cid, kind = c["id"], c["kind"]
        m, n, k, r = c.get("m", 0), c.get("n", 0), c.get("k", 0), c.get("r", 0)
        if kind == "train_step":
            try:
                fn, impl = train_step(c)
                res = quantiles(timeit(fn))
                res["impl"] = impl
                out["cases"][cid] = res
            except Exception as e:  # noqa: BLE001
                out["errors"][cid] = "%s: %s" % (type(e).__name__, e)
            continue
        try:
            with torch.no_grad():
                x = rand(m, k)
                if kind == "nf4_matmul":
                    base, _, impl = base_weight(n, k)
                    samples = timeit(lambda: base(x))
                elif kind == "lora_fwd":
                    layer = peft_linear(n, k, r)
                    if layer is not None:
                        impl = "peft LoRA Linear, dense %s base" % dtype_name
                        samples = timeit(lambda: layer(x))
                    else:
                        base, _, impl = base_weight(n, k)
                        la, lb = const_linear(rand(r, k)), const_linear(rand(n, r))
                        impl += " + LoRA by hand"
                        samples = timeit(lambda: base(x) + SCALE * lb(la(x)))
                elif kind == "lora_bwd":
                    w = rand(n, k)
                    A, B, dy = rand(r, k), rand(n, r), rand(m, n)
                    xa = x @ A.t()
                    # Constant right operands in oneDNN's layout: dy·B, dy·W, t·A.
                    by_b, by_w, by_a = const_linear(B.t()), const_linear(w.t()), const_linear(A.t())
                    impl = "explicit %ss, dense base (dx, dA, dB)" % mm_name

                    def bwd():
                        t = by_b(dy)
                        dx = by_w(dy) + SCALE * by_a(t)
                        dA = SCALE * mm(t.t(), x)
                        dB = SCALE * mm(dy.t(), xa)
                        return dx, dA, dB

                    samples = timeit(bwd)
                else:
                    raise ValueError("unknown kind %r" % kind)
            res = quantiles(samples)
            res["impl"] = impl
            out["cases"][cid] = res
        except Exception as e:  # noqa: BLE001 - one failed case must not hide the rest
            out["errors"][cid] = "%s: %s" % (type(e).__name__, e)
        finally:
            if dev == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
