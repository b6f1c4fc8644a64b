// Converts between f32 (SRC/DST 0), f16 (1) and bf16 (2) with integer arithmetic only, rounding to
// nearest even, so the result is bit-exact whatever the device's float modes. Half types are packed
// two to a u32 word (element 2w in the low half); a half output is written a whole word at a time.
struct Params { n: u32 }
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<uniform> P: Params;

fn half_bits(i: u32) -> u32 {
    return (x[i / 2u] >> (16u * (i % 2u))) & 0xffffu;
}

fn f16_to_f32(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        if (m == 0u) {
            return sign;
        }
        // Subnormal: normalise the mantissa.
        var mm = m;
        var ee = 113u;
        while ((mm & 0x400u) == 0u) {
            mm = mm << 1u;
            ee = ee - 1u;
        }
        return sign | (ee << 23u) | ((mm & 0x3ffu) << 13u);
    }
    if (e == 31u) {
        return sign | 0x7f800000u | (m << 13u);
    }
    return sign | ((e + 112u) << 23u) | (m << 13u);
}

fn load(i: u32) -> u32 {
    if (SRC == 0u) {
        return x[i];
    } else if (SRC == 1u) {
        return f16_to_f32(half_bits(i));
    }
    return half_bits(i) << 16u;
}

fn f32_to_f16(b: u32) -> u32 {
    let sign = (b >> 16u) & 0x8000u;
    let e = i32((b >> 23u) & 0xffu);
    let m = b & 0x7fffffu;
    if (e == 255) {
        if (m != 0u) {
            return sign | 0x7e00u | (m >> 13u);
        }
        return sign | 0x7c00u;
    }
    let he = e - 112;
    if (he >= 31) {
        return sign | 0x7c00u;
    }
    if (he <= 0) {
        if (he < -10) {
            return sign;
        }
        let mm = m | 0x800000u;
        let shift = u32(14 - he);
        let halfway = 1u << (shift - 1u);
        var r = mm >> shift;
        let rest = mm & ((1u << shift) - 1u);
        if (rest > halfway || (rest == halfway && (r & 1u) == 1u)) {
            r = r + 1u;
        }
        return sign | r;
    }
    var r = (u32(he) << 10u) | (m >> 13u);
    let rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u) == 1u)) {
        r = r + 1u;
    }
    return sign | r;
}

fn f32_to_bf16(b: u32) -> u32 {
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return ((b >> 16u) | 0x40u) & 0xffffu;
    }
    return ((b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u) & 0xffffu;
}

fn store_half(b: u32) -> u32 {
    if (DST == 1u) {
        return f32_to_f16(b);
    }
    return f32_to_bf16(b);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (DST == 0u) {
        if (i < P.n) {
            y[i] = load(i);
        }
        return;
    }
    if (2u * i >= P.n) {
        return;
    }
    var w = store_half(load(2u * i));
    if (2u * i + 1u < P.n) {
        w = w | (store_half(load(2u * i + 1u)) << 16u);
    }
    y[i] = w;
}
