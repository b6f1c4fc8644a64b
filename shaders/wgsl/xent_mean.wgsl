// out[0] = Σ loss / (number of rows whose target is not ignored), one workgroup.
struct Params { rows: u32, dim: u32, ignore: i32 }
@group(0) @binding(0) var<storage, read> loss: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    var n = 0.0;
    for (var i = lid; i < P.rows; i = i + WG) {
        s = s + loss[i];
        if (targets[i] != P.ignore) {
            n = n + 1.0;
        }
    }
    let total = block_sum(s, lid);
    let count = block_sum(n, lid);
    if (lid == 0u) {
        out[0] = select(total / count, 0.0, count == 0.0);
    }
}
