// Rotary embedding in Hugging Face's rotate_half convention; one invocation per (row, head, i < half).
// The angle pos·freq is split into a high and low part (fma) and reduced modulo 2π in two steps,
// so cos and sin see a small argument even for positions in the thousands.
struct Params {
    rows: u32, heads: u32, hd: u32, inverse: u32, scale: f32,
    freq: array<vec4<f32>, MAXF>,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> pos: array<i32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 1.9353071795864769e-3;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half = P.hd / 2u;
    let i = lin(wid, nwg, lid);
    if (i >= P.rows * P.heads * half) {
        return;
    }
    let row = i / (P.heads * half);
    let rem = i % (P.heads * half);
    let h = rem / half;
    let k = rem % half;
    let f = P.freq[k / 4u][k % 4u];
    let p = f32(pos[row]);
    let hi = p * f;
    let lo = fma(p, f, -hi);
    let n = round(hi / 6.283185307179586);
    var a = (hi - n * TWO_PI_HI) - n * TWO_PI_LO + lo;
    if (P.inverse != 0u) {
        a = -a;
    }
    let cs = cos(a) * P.scale;
    let sn = sin(a) * P.scale;
    let base = row * P.heads * P.hd + h * P.hd;
    let x1 = x[base + k];
    let x2 = x[base + k + half];
    y[base + k] = x1 * cs - x2 * sn;
    y[base + k + half] = x2 * cs + x1 * sn;
}
