package peft

import (
	"fmt"

	"github.com/lathe-ml/lathe/model"
)

// Merge folds the adapter into m's dense weights in place, as PEFT's merge_and_unload does: LoRA
// adds s·B·A to W; IA3 scales W's rows by l (and the bias), or, feedforward, W's columns. After
// it, the plain model computes what the model with the adapter computed. 4-bit weights are
// refused: merging into them would need a requantization that changes the base.
func Merge(m *model.Model, a *Adapter) error {
	if m == nil || a == nil {
		return fmt.Errorf("merge: no model or adapter")
	}
	// Check everything first so that a refusal leaves the model untouched.
	for _, md := range a.modules {
		if m.Quant[md.Name] != nil {
			return fmt.Errorf("merge %s: the base weight is 4-bit; load the model without quantization to merge", md.Name)
		}
		w, ok := m.Tensors[md.Name+".weight"]
		if !ok || len(w.Shape()) != 2 || w.Shape()[0] != md.Out || w.Shape()[1] != md.In {
			return fmt.Errorf("merge %s: the model has no dense [%d %d] weight", md.Name, md.Out, md.In)
		}
		for _, key := range md.keys(a.Config.PeftType) {
			if _, ok := a.tensors[key]; !ok {
				return fmt.Errorf("merge: %s has been released", key)
			}
		}
	}
	for _, md := range a.modules {
		wt := m.Tensors[md.Name+".weight"]
		w, err := wt.Float32()
		if err != nil {
			return fmt.Errorf("merge %s: %w", md.Name, err)
		}
		keys := md.keys(a.Config.PeftType)
		if a.Config.PeftType == TypeIA3 {
			l, err := a.tensors[keys[0]].Float32()
			if err != nil {
				return fmt.Errorf("merge %s: %w", md.Name, err)
			}
			for o := 0; o < md.Out; o++ {
				for i := 0; i < md.In; i++ {
					if md.Feedforward {
						w[o*md.In+i] *= l[i]
					} else {
						w[o*md.In+i] *= l[o]
					}
				}
			}
			if bt, ok := m.Tensors[md.Name+".bias"]; ok && !md.Feedforward {
				b, err := bt.Float32()
				if err != nil {
					return fmt.Errorf("merge %s: %w", md.Name, err)
				}
				for o := range b {
					b[o] *= l[o]
				}
				if err := bt.SetFloat32(b); err != nil {
					return fmt.Errorf("merge %s: %w", md.Name, err)
				}
			}
		} else {
			A, err := a.tensors[keys[0]].Float32()
			if err != nil {
				return fmt.Errorf("merge %s: %w", md.Name, err)
			}
			B, err := a.tensors[keys[1]].Float32()
			if err != nil {
				return fmt.Errorf("merge %s: %w", md.Name, err)
			}
			// W[o, i] += s·Σ_k B[o, k]·A[k, i], accumulated in float64.
			s := float64(md.Scale)
			row := make([]float64, md.In)
			for o := 0; o < md.Out; o++ {
				clear(row)
				for k := 0; k < md.R; k++ {
					bk := float64(B[o*md.R+k])
					for i, x := range A[k*md.In : (k+1)*md.In] {
						row[i] += bk * float64(x)
					}
				}
				for i := range row {
					w[o*md.In+i] = float32(float64(w[o*md.In+i]) + s*row[i])
				}
			}
		}
		if err := wt.SetFloat32(w); err != nil {
			return fmt.Errorf("merge %s: %w", md.Name, err)
		}
	}
	return nil
}
