// A training step's decision (engine.ClipStatus): status = (loss, Σg², coefficient, skip). The step
// is skipped when the loss or the norm √Σg²·scale is not finite (tested on the bits: WGSL may
// assume there are no NaNs); the coefficient is the scale, times maxnorm/(norm + 1e-6) above
// maxnorm.
struct Params { maxnorm: f32 }
@group(0) @binding(0) var<storage, read> loss: array<f32>;
@group(0) @binding(1) var<storage, read> sumsq: array<f32>;
@group(0) @binding(2) var<storage, read> ctl: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: array<f32>;
@group(0) @binding(4) var<uniform> P: Params;

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(1)
fn main() {
    let l = loss[0];
    let ss = sumsq[0];
    let scale = ctl[1];
    let norm = sqrt(ss) * scale;
    var coef = scale;
    if (P.maxnorm > 0.0 && norm > P.maxnorm) {
        coef = scale * (P.maxnorm / (norm + 1e-6));
    }
    var skip = 0.0;
    if (!finite(l) || !finite(ss) || !finite(norm)) {
        skip = 1.0;
    }
    status[0] = l;
    status[1] = ss;
    status[2] = coef;
    status[3] = skip;
}
