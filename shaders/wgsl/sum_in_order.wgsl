// y[0] = x[0] + x[1] + … + x[n−1], added one after another in f32 (the order the CPU adds the
// per-tensor sums of squares in).
struct Params { n: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(1)
fn main() {
    var s = x[0];
    for (var i = 1u; i < P.n; i = i + 1u) {
        s = s + x[i];
    }
    y[0] = s;
}
