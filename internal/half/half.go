// Package half converts between float32 and the 16-bit float formats of checkpoints: bfloat16 here,
// IEEE half through github.com/x448/float16.
package half

import "math"

// BF16 rounds v to the nearest bfloat16 (ties to even), keeping NaN a NaN.
func BF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToFloat32 widens a bfloat16 exactly.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
