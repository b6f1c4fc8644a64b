package checkpoint

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// RewriteReport says what RewriteFolder wrote.
type RewriteReport struct {
	Out         string   `json:"out"`
	Changed     int      `json:"changed_tensors"`
	Kept        int      `json:"kept_tensors"`
	BytesOut    int64    `json:"bytes_out"`
	CopiedFiles []string `json:"copied_files"`
}

// RewriteFolder writes to outDir the model in inDir with the floating tensors that changes names
// replaced by what edit returns for them: their new values as float32, same shape, stored in the
// tensor's own dtype. config.json and the other files are copied. Tensors are read and produced
// one at a time as the single model.safetensors is written, atomically.
func RewriteFolder(inDir, outDir string, changes func(name string) bool, edit func(name string, t Tensor) ([]float32, error)) (RewriteReport, error) {
	var rep RewriteReport
	if err := checkOutDir(inDir, outDir); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	ck, err := Open(inDir)
	if err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	defer ck.Close()
	out := map[string]lazyTensor{}
	for _, name := range ck.Names() {
		t, _ := ck.Tensor(name)
		if !IsFloat(t.DType) {
			out[name] = lazyTensor{Tensor: t}
			rep.Kept++
			continue
		}
		if !changes(name) {
			out[name] = lazyTensor{Tensor: t}
			rep.Kept++
			continue
		}
		rep.Changed++
		out[name] = lazyTensor{
			Tensor: Tensor{DType: t.DType, Shape: t.Shape},
			produce: func() ([]byte, error) {
				v, err := edit(name, t)
				if err != nil {
					return nil, fmt.Errorf("rewrite %s: %w", name, err)
				}
				if int64(len(v)) != t.Numel() {
					return nil, fmt.Errorf("rewrite %s: %d values for %v", name, len(v), t.Shape)
				}
				nt, err := FromFloat32As(v, t.Shape, t.DType)
				if err != nil {
					return nil, fmt.Errorf("rewrite %s: %w", name, err)
				}
				return nt.Data, nil
			},
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	weights := filepath.Join(outDir, WeightsFile)
	if err := writeSafetensors(weights, out, map[string]string{"format": "pt"}); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	if err := WriteConfig(filepath.Join(outDir, ConfigFile), cloneConfig(ck.Config)); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	copied, err := ck.copyExtras(outDir)
	if err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	rep.Out, rep.BytesOut, rep.CopiedFiles = outDir, fileSize(weights), nonNil(copied)
	return rep, nil
}

// RoPEHalves reorders the rows of a q or k projection [rows, cols] (a bias has cols 1) within each
// of its heads from interleaved RoPE pairs (0,1),(2,3),… to transformers' halves
// (0,hd/2),(1,hd/2+1),…: row j of a head takes old row 2j and row hd/2+j old row 2j+1. It undoes
// the permutation of transformers' convert_llama_weights_to_hf and llama.cpp's converter.
func RoPEHalves(w []float32, heads, rows, cols int) []float32 {
	out := make([]float32, len(w))
	hd := rows / heads
	half := hd / 2
	for h := 0; h < heads; h++ {
		for j := 0; j < half; j++ {
			copy(out[(h*hd+j)*cols:(h*hd+j+1)*cols], w[(h*hd+2*j)*cols:(h*hd+2*j+1)*cols])
			copy(out[(h*hd+half+j)*cols:(h*hd+half+j+1)*cols], w[(h*hd+2*j+1)*cols:(h*hd+2*j+2)*cols])
		}
	}
	return out
}

// RoPEInterleaved is the inverse of RoPEHalves: transformers' halves order to the interleaved
// pairs llama.cpp's "llama" architecture expects.
func RoPEInterleaved(w []float32, heads, rows, cols int) []float32 {
	out := make([]float32, len(w))
	hd := rows / heads
	half := hd / 2
	for h := 0; h < heads; h++ {
		for j := 0; j < half; j++ {
			copy(out[(h*hd+2*j)*cols:(h*hd+2*j+1)*cols], w[(h*hd+j)*cols:(h*hd+j+1)*cols])
			copy(out[(h*hd+2*j+1)*cols:(h*hd+2*j+2)*cols], w[(h*hd+half+j)*cols:(h*hd+half+j+1)*cols])
		}
	}
	return out
}

// Llama3RopeFactors returns the per-dimension divisors of the RoPE frequencies base^(-2i/headDim)
// that Llama 3.1's rope_scaling (rope_type llama3) applies: 1 for wavelengths under
// orig/high, factor for those over orig/low, and a smooth blend between. They are the values
// llama.cpp's convert_hf_to_gguf.py writes as rope_freqs.weight and that ggml divides each
// frequency by; transformers' _compute_llama3_parameters multiplies by their reciprocals.
func Llama3RopeFactors(theta float64, headDim int, factor, low, high float64, orig int) []float64 {
	o := float64(orig)
	lowWave, highWave := o/low, o/high
	out := make([]float64, headDim/2)
	for i := range out {
		wave := 2 * math.Pi * math.Pow(theta, float64(2*i)/float64(headDim))
		switch {
		case wave < highWave:
			out[i] = 1
		case wave > lowWave:
			out[i] = factor
		default:
			s := (o/wave - low) / (high - low)
			out[i] = 1 / ((1-s)/factor + s)
		}
	}
	return out
}
