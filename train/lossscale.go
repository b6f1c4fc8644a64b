package train

import (
	"fmt"
	"math"
)

// LossScale is dynamic loss scaling as torch.amp.GradScaler does it: the loss is multiplied by
// Scale before the backward pass, so that small gradients survive a 16-bit activation format, and
// the gradients are divided by it again before the norm, clipping and the update (the step's
// gradient coefficient, on the device). A step whose loss or gradients are not finite (an
// overflow) is skipped, as every such step is, and the scale is halved; after GrowthInterval clean
// steps in a row it doubles. Scales stay powers of two, so scaling and unscaling are exact in
// floating point: where nothing overflows, a scaled run computes the unscaled run's weights bit
// for bit. The state is saved in checkpoints (trainer_state.json), so a resumed run goes on with
// the same scale.
type LossScale struct {
	Scale          float64 `json:"scale"`
	GrowthInterval int     `json:"growth_interval"`
	// Clean counts the clean steps since the scale last changed (torch's growth tracker).
	Clean int `json:"clean_steps"`
}

// Loss scaling's defaults, torch.amp.GradScaler's: an initial scale of 2¹⁶, doubled after 2000
// clean steps.
const (
	DefaultLossScale       = 65536
	DefaultLossScaleGrowth = 2000
	// minLossScale keeps 1/Scale finite after any number of overflows.
	minLossScale = 1.0 / (1 << 24)
)

// NewLossScale starts dynamic loss scaling at init (rounded down to a power of two), doubling
// after growth clean steps.
func NewLossScale(init float64, growth int) (*LossScale, error) {
	if !(init >= 1) || math.IsInf(init, 0) || growth <= 0 {
		return nil, fmt.Errorf("train: loss scale %v must be at least 1 and finite, its growth interval %d positive", init, growth)
	}
	_, e := math.Frexp(init)
	return &LossScale{Scale: math.Ldexp(1, e-1), GrowthInterval: growth}, nil
}

// Update moves the scale after a step: halved when the step was skipped, doubled after
// GrowthInterval clean steps in a row.
func (l *LossScale) Update(skipped bool) {
	if skipped {
		l.Scale = math.Max(l.Scale/2, minLossScale)
		l.Clean = 0
		return
	}
	if l.Clean++; l.Clean >= l.GrowthInterval {
		l.Scale *= 2
		l.Clean = 0
	}
}
