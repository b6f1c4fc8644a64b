package peft

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/lathe-ml/lathe/model"
)

// PiSSA (init_lora_weights "pissa", PEFT's pissa_init): A and B start from the top r singular
// triplets of W = U·S·Vᵀ, A = diag(√(S_r/s))·V_rᵀ and B = U_r·diag(√(S_r/s)), and the base keeps the
// residual W − s·B·A, so the model starts unchanged. The adapter is saved as PEFT's
// save_pretrained(path_initial_model_for_weight_conversion=...) saves it: an ordinary LoRA of rank
// 2r over the untouched base, A' = [A; A₀], B' = [B | −B₀], r and lora_alpha doubled (alpha by √2
// with rsLoRA), so that s·B'·A' = s·(B·A − B₀·A₀) is the change training made.

// InitPiSSA is init_lora_weights' value for PiSSA.
const InitPiSSA = "pissa"

func (c *Config) pissa() bool { s, _ := c.InitLoraWeights.(string); return s == InitPiSSA }

// initPiSSA sets a's A and B from the SVD of each wrapped weight of m and subtracts s·B·A from
// m's weights (in place), keeping A₀ and B₀ for the conversion at save time.
func (a *Adapter) initPiSSA(m *model.Model) error {
	if a.Config.UseDoRA {
		return fmt.Errorf("adapter: PiSSA with DoRA is not supported")
	}
	for _, md := range a.modules {
		if m.Quant[md.Name] != nil {
			return fmt.Errorf("adapter: PiSSA needs a dense base: %s is 4-bit", md.Name)
		}
	}
	a.pissaInit = map[string][]float32{}
	for _, md := range a.modules {
		wt, ok := m.Tensors[md.Name+".weight"]
		if !ok {
			return fmt.Errorf("adapter: PiSSA: the model has no %s.weight", md.Name)
		}
		w, err := wt.Float32()
		if err != nil {
			return fmt.Errorf("adapter: PiSSA %s: %w", md.Name, err)
		}
		A, B, err := pissaFactors(w, md.Out, md.In, md.R, float64(md.Scale))
		if err != nil {
			return fmt.Errorf("adapter: PiSSA %s: %w", md.Name, err)
		}
		keys := md.keys(TypeLoRA)
		for i, v := range [][]float32{A, B} {
			if err := a.tensors[keys[i]].SetFloat32(v); err != nil {
				return fmt.Errorf("adapter: PiSSA %s: %w", md.Name, err)
			}
			a.pissaInit[keys[i]] = append([]float32(nil), v...)
		}
		s := float64(md.Scale)
		for o := 0; o < md.Out; o++ {
			for i := 0; i < md.In; i++ {
				var d float64
				for k := 0; k < md.R; k++ {
					d += float64(B[o*md.R+k]) * float64(A[k*md.In+i])
				}
				w[o*md.In+i] = float32(float64(w[o*md.In+i]) - s*d)
			}
		}
		if err := wt.SetFloat32(w); err != nil {
			return fmt.Errorf("adapter: PiSSA %s: %w", md.Name, err)
		}
	}
	return nil
}

// pissaFactors returns PiSSA's A ([r, in]) and B ([out, r]) for w ([out, in]) and scale s.
func pissaFactors(w []float32, out, in, r int, s float64) (A, B []float32, err error) {
	if r > min(out, in) {
		return nil, nil, fmt.Errorf("rank %d is above the weight's %d×%d", r, out, in)
	}
	d := make([]float64, len(w))
	for i, v := range w {
		d[i] = float64(v)
	}
	var svd mat.SVD
	if !svd.Factorize(mat.NewDense(out, in, d), mat.SVDThin) {
		return nil, nil, fmt.Errorf("the SVD did not converge")
	}
	S := svd.Values(nil)
	var U, V mat.Dense
	svd.UTo(&U)
	svd.VTo(&V)
	A, B = make([]float32, r*in), make([]float32, out*r)
	for k := 0; k < r; k++ {
		f := math.Sqrt(S[k] / s)
		for i := 0; i < in; i++ {
			A[k*in+i] = float32(f * V.At(i, k))
		}
		for o := 0; o < out; o++ {
			B[o*r+k] = float32(U.At(o, k) * f)
		}
	}
	return A, B, nil
}

// converted returns the config and tensors PEFT's conversion of a PiSSA adapter saves (see above).
func (a *Adapter) converted(cfg Config, tensors map[string][]float32) (Config, map[string][]float32, error) {
	cfg.InitLoraWeights = true
	cfg.R *= 2
	if cfg.UseRSLoRA {
		cfg.LoraAlpha *= math.Sqrt2
	} else {
		cfg.LoraAlpha *= 2
	}
	double := func(m map[string]any) map[string]any {
		o := map[string]any{}
		for k, v := range m {
			if f, ok := v.(float64); ok {
				o[k] = 2 * f
			}
		}
		return o
	}
	cfg.RankPattern, cfg.AlphaPattern = double(cfg.RankPattern), double(cfg.AlphaPattern)
	out := map[string][]float32{}
	for _, md := range a.modules {
		keys := md.keys(TypeLoRA)
		A, B := tensors[keys[0]], tensors[keys[1]]
		A0, B0 := a.pissaInit[keys[0]], a.pissaInit[keys[1]]
		if A0 == nil || B0 == nil {
			return cfg, nil, fmt.Errorf("save adapter: %s has no PiSSA initial weights", md.Name)
		}
		out[keys[0]] = append(append([]float32(nil), A...), A0...) // rows: A, then A₀
		b2 := make([]float32, md.Out*2*md.R)
		for o := 0; o < md.Out; o++ {
			for k := 0; k < md.R; k++ {
				b2[o*2*md.R+k] = B[o*md.R+k]
				b2[o*2*md.R+md.R+k] = -B0[o*md.R+k]
			}
		}
		out[keys[1]] = b2
	}
	return cfg, out, nil
}
