import torch, json, math, sys
print(torch.__version__, file=sys.stderr)
out = {"torch": torch.__version__, "bernoulli": [], "peft": []}
# torch.bernoulli(torch.full_like(t, density)) right after torch.manual_seed(seed): the mask.
for seed, shape, d in [(0, (3, 5), 0.5), (42, (7, 13), 0.7), (12345, (16, 9), 0.1), (2**32 + 7, (4, 33), 0.9), (5, (1, 1000), 0.3)]:
    torch.manual_seed(seed)
    m = torch.bernoulli(torch.full(shape, d, dtype=torch.float32))
    bits = "".join("1" if x else "0" for x in m.flatten().tolist())
    torch.manual_seed(seed)
    first = [int(x) for x in torch.randint(0, 2**31, (4,), dtype=torch.int64).tolist()]
    out["bernoulli"].append({"seed": seed, "shape": list(shape), "density": d, "mask": bits})
# PEFT's add_weighted_adapter after torch.manual_seed(seed): inject_adapter builds each new
# module's lora_A = nn.Linear(in, r), lora_B = nn.Linear(r, out) (their own kaiming init) and,
# with init_lora_weights=True, kaiming_uniform_ of lora_A again; then, module by module, dare
# draws a mask over every adapter's A, then over every adapter's B.
import torch.nn as nn
for seed, init, mods, nad, r, d in [(7, True, [(6, 5), (4, 6)], 2, 3, 0.6), (99, False, [(8, 8), (8, 3), (5, 8)], 3, 2, 0.4)]:
    torch.manual_seed(seed)
    for (o, i) in mods:
        a = nn.Linear(i, r, bias=False)
        b = nn.Linear(r, o, bias=False)
        if init:
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)
    masks = []
    for (o, i) in mods:
        for shape in [(r, i), (o, r)]:
            for _ in range(nad):
                m = torch.bernoulli(torch.full(shape, d, dtype=torch.float32))
                masks.append("".join("1" if x else "0" for x in m.flatten().tolist()))
    out["peft"].append({"seed": seed, "init_lora_weights": init, "modules": [list(m) for m in mods], "adapters": nad, "r": r, "density": d, "masks": masks})
json.dump(out, open(sys.argv[1], "w"), indent=1)
