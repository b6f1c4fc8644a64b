package peft

import (
	"fmt"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/quant"
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
		if err := a.mergeWeight(md, w); err != nil {
			return err
		}
		if err := wt.SetFloat32(w); err != nil {
			return fmt.Errorf("merge %s: %w", md.Name, err)
		}
		if bt, ok := m.Tensors[md.Name+".bias"]; ok && a.Config.PeftType == TypeIA3 && !md.Feedforward {
			b, err := bt.Float32()
			if err != nil {
				return fmt.Errorf("merge %s: %w", md.Name, err)
			}
			if err := a.mergeBias(md, b); err != nil {
				return err
			}
			if err := bt.SetFloat32(b); err != nil {
				return fmt.Errorf("merge %s: %w", md.Name, err)
			}
		}
	}
	return nil
}

// mergeWeight folds module md into its weight w ([out, in], in place): LoRA adds s·B·A
// (accumulated in float64), IA3 scales rows by l or, feedforward, columns.
func (a *Adapter) mergeWeight(md *Module, w []float32) error {
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
		return nil
	}
	A, err := a.tensors[keys[0]].Float32()
	if err != nil {
		return fmt.Errorf("merge %s: %w", md.Name, err)
	}
	B, err := a.tensors[keys[1]].Float32()
	if err != nil {
		return fmt.Errorf("merge %s: %w", md.Name, err)
	}
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
	if md.DoRA {
		return a.mergeDoRA(md, w)
	}
	return nil
}

// mergeBias scales an IA3 output module's bias by l (PEFT scales the layer's output, bias
// included).
func (a *Adapter) mergeBias(md *Module, b []float32) error {
	l, err := a.tensors[md.keys(TypeIA3)[0]].Float32()
	if err != nil {
		return fmt.Errorf("merge %s: %w", md.Name, err)
	}
	for o := range b {
		b[o] *= l[o]
	}
	return nil
}

// MergeFolder writes to outDir the model folder baseDir with the adapter merged into its weights
// (as Merge, in the checkpoint's dtypes), for a deployment that needs no adapter: a Hugging Face
// folder any runtime loads. A 4-bit (bitsandbytes) base is refused: dequantize it first.
func MergeFolder(baseDir, outDir string, a *Adapter) (checkpoint.RewriteReport, error) {
	ck, err := checkpoint.Open(baseDir)
	if err != nil {
		return checkpoint.RewriteReport{}, fmt.Errorf("merge: %w", err)
	}
	edits := map[string]*Module{}
	for _, md := range a.modules {
		name := md.Name + ".weight"
		t, ok := ck.Tensor(name)
		switch {
		case !ok:
			ck.Close()
			return checkpoint.RewriteReport{}, fmt.Errorf("merge: %s has no tensor %s", baseDir, name)
		case !checkpoint.IsFloat(t.DType):
			ck.Close()
			return checkpoint.RewriteReport{}, fmt.Errorf("merge: %s is %s in %s (4-bit?): dequantize the model first, or use MergeFolder4bit", name, t.DType, baseDir)
		case len(t.Shape) != 2 || t.Shape[0] != md.Out || t.Shape[1] != md.In:
			ck.Close()
			return checkpoint.RewriteReport{}, fmt.Errorf("merge: %s is %v, the adapter wants [%d %d]", name, t.Shape, md.Out, md.In)
		}
		edits[name] = md
		if _, ok := ck.Tensor(md.Name + ".bias"); ok && a.Config.PeftType == TypeIA3 && !md.Feedforward {
			edits[md.Name+".bias"] = md
		}
	}
	ck.Close()
	return checkpoint.RewriteFolder(baseDir, outDir, func(name string) bool { return edits[name] != nil },
		func(name string, t checkpoint.Tensor) ([]float32, error) {
			v, err := checkpoint.ToFloat32(t)
			if err != nil {
				return nil, err
			}
			md := edits[name]
			if name == md.Name+".bias" {
				return v, a.mergeBias(md, v)
			}
			return v, a.mergeWeight(md, v)
		})
}

// MergeFolder4bit merges the adapter into a bitsandbytes 4-bit base folder (a QLoRA adapter over
// the NF4 or FP4 base it was trained on): each adapted weight is written as dequantize(W) + ΔW,
// in BF16 (as Unsloth's save_pretrained_merged does by default), every other 4-bit weight as
// dequantize(W) in BF16; requantize "nf4" or "fp4" writes the merged weights in bitsandbytes'
// 4-bit format again instead. One tensor is decoded and merged at a time.
func MergeFolder4bit(baseDir, outDir string, a *Adapter, requantize string) (checkpoint.Rewrite4Report, error) {
	var rq *quant.Type
	if requantize != "" {
		t, err := quant.ParseType(requantize)
		if err != nil {
			return checkpoint.Rewrite4Report{}, fmt.Errorf("merge: requantize: %w", err)
		}
		rq = &t
	}
	ck, err := checkpoint.Open(baseDir)
	if err != nil {
		return checkpoint.Rewrite4Report{}, fmt.Errorf("merge: %w", err)
	}
	q4, _, err := ck.Bnb4bit()
	if err != nil {
		ck.Close()
		return checkpoint.Rewrite4Report{}, fmt.Errorf("merge: %w", err)
	}
	edits := map[string]*Module{}
	for _, md := range a.modules {
		name := md.Name + ".weight"
		shape := []int(nil)
		if q, ok := q4[name]; ok {
			shape = q.Shape
		} else if t, ok := ck.Tensor(name); ok && checkpoint.IsFloat(t.DType) {
			shape = t.Shape
		}
		if len(shape) != 2 || shape[0] != md.Out || shape[1] != md.In {
			ck.Close()
			return checkpoint.Rewrite4Report{}, fmt.Errorf("merge: %s has no [%d %d] weight %s", baseDir, md.Out, md.In, name)
		}
		edits[name] = md
		if _, ok := ck.Tensor(md.Name + ".bias"); ok && a.Config.PeftType == TypeIA3 && !md.Feedforward {
			edits[md.Name+".bias"] = md
		}
	}
	ck.Close()
	return checkpoint.Rewrite4bitFolder(baseDir, outDir, rq, func(name string) bool { return edits[name] != nil },
		func(name string, v []float32) error {
			md := edits[name]
			if name == md.Name+".bias" {
				return a.mergeBias(md, v)
			}
			return a.mergeWeight(md, v)
		})
}

// Is4bitFolder reports whether the model folder holds bitsandbytes 4-bit weights.
func Is4bitFolder(dir string) (bool, error) {
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return false, err
	}
	defer ck.Close()
	q4, _, err := ck.Bnb4bit()
	return len(q4) > 0, err
}
