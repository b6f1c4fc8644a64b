package peft

import (
	"fmt"

	"github.com/lathe-ml/lathe/model"
)

// Combine returns one LoRA adapter equal to the weighted sum of several, as PEFT's
// add_weighted_adapter with combination_type="cat": the ranks are concatenated (A stacks the As,
// B the weighted, scaled Bs), so ΔW = Σ weights[i]·scale_i·B_i·A_i exactly, with rank Σ r_i and
// scale 1. A module that an adapter does not target gets zeros in that adapter's rank slots. The
// adapters must be LoRA adapters of one model on one backend.
func Combine(weights []float64, adapters ...*Adapter) (*Adapter, error) {
	names, ranks, err := checkCombinable(weights, adapters)
	if err != nil {
		return nil, err
	}
	rank := 0
	for _, r := range ranks {
		rank += r
	}
	first := adapters[0]
	cfg := first.Config
	cfg.R, cfg.LoraAlpha, cfg.UseRSLoRA = rank, float64(rank), false
	cfg.TargetModules = Names(names...)
	// Per-module ranks and alphas are folded into B; the names are whole paths.
	cfg.RankPattern, cfg.AlphaPattern, cfg.LayersToTransform, cfg.LayersPattern = nil, nil, nil, nil
	cfg.LoraDropout = 0
	out, err := newAdapter(cfg, first.model, first.backend)
	if err != nil {
		return nil, fmt.Errorf("combine: %w", err)
	}
	for _, md := range out.modules {
		keys := md.keys(TypeLoRA)
		A := make([]float32, md.R*md.In)
		B := make([]float32, md.Out*md.R)
		off := 0 // rank slots taken so far
		for i, a := range adapters {
			src := a.byName[md.Name]
			r := a.modules[0].R
			if src != nil {
				at, bt := a.tensors[keys[0]], a.tensors[keys[1]]
				av, err := at.Float32()
				if err != nil {
					out.Release()
					return nil, fmt.Errorf("combine: %w", err)
				}
				bv, err := bt.Float32()
				if err != nil {
					out.Release()
					return nil, fmt.Errorf("combine: %w", err)
				}
				copy(A[off*md.In:], av) // rows off..off+r
				s := float32(weights[i]) * src.Scale
				for o := 0; o < md.Out; o++ {
					for j := 0; j < r; j++ {
						B[o*md.R+off+j] = s * bv[o*r+j]
					}
				}
			}
			off += r
		}
		if err := out.upload(keys[0], md.graphShape(keys[0]), A); err != nil {
			out.Release()
			return nil, err
		}
		if err := out.upload(keys[1], md.graphShape(keys[1]), B); err != nil {
			out.Release()
			return nil, err
		}
	}
	return out, nil
}

// checkCombinable checks that the adapters are LoRA adapters of one model on one backend, one
// weight each, and returns the modules they target (in first-seen order) and each one's rank.
func checkCombinable(weights []float64, adapters []*Adapter) (names []string, ranks []int, err error) {
	if len(adapters) == 0 || len(weights) != len(adapters) {
		return nil, nil, fmt.Errorf("combine: %d weights for %d adapters", len(weights), len(adapters))
	}
	first := adapters[0]
	seen := map[string]bool{}
	for i, a := range adapters {
		if a.Config.PeftType != TypeLoRA {
			return nil, nil, fmt.Errorf("combine: adapter %d is %s, not LORA", i, a.Config.PeftType)
		}
		if a.Config.UseDoRA {
			return nil, nil, fmt.Errorf("combine: adapter %d is DoRA: its magnitudes do not add (merge it instead)", i)
		}
		if m, f := a.model, first.model; m.HiddenSize != f.HiddenSize || m.NumLayers != f.NumLayers ||
			m.IntermediateSize != f.IntermediateSize || m.NumHeads != f.NumHeads || m.NumKVHeads != f.NumKVHeads ||
			m.HeadDim != f.HeadDim || m.VocabSize != f.VocabSize {
			return nil, nil, fmt.Errorf("combine: adapter %d is for another model", i)
		}
		if a.backend != first.backend {
			return nil, nil, fmt.Errorf("combine: adapter %d lives on another backend", i)
		}
		r := 0
		for _, md := range a.modules {
			if r != 0 && md.R != r {
				return nil, nil, fmt.Errorf("combine: adapter %d has ranks that differ by module", i)
			}
			r = md.R
			if !seen[md.Name] {
				seen[md.Name] = true
				names = append(names, md.Name)
			}
		}
		ranks = append(ranks, r)
	}
	return names, ranks, nil
}

// CombineAdapters is Combine for adapters held as model.Adapter (serve.Registry's
// AdapterCombiner): every part must be a PEFT adapter.
func CombineAdapters(weights []float64, parts []model.Adapter) (model.Adapter, error) {
	as := make([]*Adapter, len(parts))
	for i, a := range parts {
		pa, ok := a.(*Adapter)
		if !ok {
			return nil, fmt.Errorf("combine: adapter %d is not a PEFT adapter", i)
		}
		as[i] = pa
	}
	return Combine(weights, as...)
}
