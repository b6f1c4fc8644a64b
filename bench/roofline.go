package bench

// Roofline is a device's measured ceilings: the arithmetic rate of lathe's best matmul and the
// memory bandwidth of a large streaming kernel. A kernel of arithmetic intensity AI (flop/byte)
// can at best reach min(PeakFLOPS, AI·Bandwidth).
type Roofline struct {
	// PeakFLOPS is in flop/s.
	PeakFLOPS float64 `json:"peak_flops"`
	// Bandwidth is in bytes (read + written) per second.
	Bandwidth float64 `json:"bandwidth"`
}

// Valid reports whether both ceilings were measured.
func (r Roofline) Valid() bool { return r.PeakFLOPS > 0 && r.Bandwidth > 0 }

// Attainable is the roofline at arithmetic intensity ai: min(PeakFLOPS, ai·Bandwidth).
func (r Roofline) Attainable(ai float64) float64 {
	return min(r.PeakFLOPS, ai*r.Bandwidth)
}

// Ridge is the arithmetic intensity where the two ceilings meet.
func (r Roofline) Ridge() float64 {
	if r.Bandwidth <= 0 {
		return 0
	}
	return r.PeakFLOPS / r.Bandwidth
}

// Fraction is how much of the roofline a kernel doing flops and moving bytes in sec reached:
// achieved flop/s over Attainable(flops/bytes). It is 0 when anything is unknown. It may exceed 1:
// the bandwidth ceiling comes from one f32 stream, and caches can beat it.
func (r Roofline) Fraction(flops, bytes, sec float64) float64 {
	if !r.Valid() || flops <= 0 || bytes <= 0 || sec <= 0 {
		return 0
	}
	return flops / sec / r.Attainable(flops/bytes)
}
