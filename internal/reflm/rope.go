package reflm

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Rope is a float64 reference of the rotary embedding's inverse frequencies and attention
// factor for a forward pass over seqLen positions, written from transformers'
// modeling_rope_utils.py (the _compute_*_parameters functions and dynamic_rope_update) and read
// straight from config.json: it shares no code with model.Config.Rope. It panics on a rope type it
// does not know (it is a test reference).
func Rope(raw map[string]any, seqLen int) (invFreq []float64, attention float64) {
	num := func(m map[string]any, k string) (float64, bool) {
		v, ok := m[k].(float64)
		return v, ok
	}
	base, ok := num(raw, "rope_theta")
	if !ok {
		base = 10000
	}
	hidden, _ := num(raw, "hidden_size")
	heads, _ := num(raw, "num_attention_heads")
	dim := int(hidden) / int(heads)
	if hd, ok := num(raw, "head_dim"); ok {
		dim = int(hd)
	}
	maxPos, _ := num(raw, "max_position_embeddings")
	rs, _ := raw["rope_scaling"].(map[string]any)
	kind := "default"
	if rs != nil {
		if s, ok := rs["rope_type"].(string); ok {
			kind = s
		} else if s, ok := rs["type"].(string); ok {
			kind = s
		}
	}
	factor, _ := num(rs, "factor")
	// inv_freq = 1 / base^(arange(0, dim, 2) / dim)
	defaults := func(base float64) []float64 {
		f := make([]float64, 0, dim/2)
		for i := 0; i < dim; i += 2 {
			f = append(f, 1/math.Pow(base, float64(i)/float64(dim)))
		}
		return f
	}
	switch kind {
	case "default":
		return defaults(base), 1
	case "linear":
		f := defaults(base)
		for i := range f {
			f[i] /= factor
		}
		return f, 1
	case "dynamic":
		// dynamic_rope_update recomputes with the current length once it exceeds the trained one.
		seq := math.Max(float64(seqLen), maxPos)
		base *= math.Pow(factor*seq/maxPos-(factor-1), float64(dim)/float64(dim-2))
		return defaults(base), 1
	case "llama3":
		f := defaults(base)
		low, _ := num(rs, "low_freq_factor")
		high, _ := num(rs, "high_freq_factor")
		old, _ := num(rs, "original_max_position_embeddings")
		lowWave, highWave := old/low, old/high
		out := make([]float64, len(f))
		for i := range f {
			wave := 2 * math.Pi / f[i]
			scaled := f[i]
			if wave > lowWave {
				scaled = f[i] / factor
			}
			out[i] = scaled
			if !(wave < highWave) && !(wave > lowWave) {
				smooth := (old/wave - low) / (high - low)
				out[i] = (1-smooth)*scaled/factor + smooth*scaled
			}
		}
		return out, 1
	case "yarn":
		orig, ok := num(rs, "original_max_position_embeddings")
		if !ok {
			orig = maxPos
		}
		mscale := func(scale, m float64) float64 {
			if scale <= 1 {
				return 1
			}
			return 0.1*m*math.Log(scale) + 1
		}
		attention, ok = num(rs, "attention_factor")
		if !ok {
			attention = mscale(factor, 1)
		}
		betaFast, ok := num(rs, "beta_fast")
		if !ok || betaFast == 0 {
			betaFast = 32
		}
		betaSlow, ok := num(rs, "beta_slow")
		if !ok || betaSlow == 0 {
			betaSlow = 1
		}
		corrDim := func(rot float64) float64 {
			return float64(dim) * math.Log(orig/(rot*2*math.Pi)) / (2 * math.Log(base))
		}
		lo := math.Max(math.Floor(corrDim(betaFast)), 0)
		hi := math.Min(math.Ceil(corrDim(betaSlow)), float64(dim-1))
		if lo == hi {
			hi += 0.001
		}
		out := make([]float64, dim/2)
		for i := range out {
			posFreq := math.Pow(base, float64(2*i)/float64(dim))
			extra, inter := 1/posFreq, 1/(factor*posFreq)
			ramp := math.Min(math.Max((float64(i)-lo)/(hi-lo), 0), 1)
			extraFactor := 1 - ramp
			out[i] = inter*(1-extraFactor) + extra*extraFactor
		}
		return out, attention
	}
	panic("reflm.Rope: unknown rope type " + kind)
}

// Config reads a model folder's config.json as raw JSON (what Rope and Logits take).
func Config(dir string) (map[string]any, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("reflm: %s: %w", dir, err)
	}
	return raw, nil
}
