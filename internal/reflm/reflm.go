// Package reflm is the float64 reference of the Llama-family decoder that tests compare the engine
// against: a direct transcription of the published equations, slow and obviously right.
package reflm

import (
	"fmt"
	"math"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
)

// Logits is a float64 implementation of transformers' LlamaForCausalLM / Qwen2ForCausalLM forward,
// written from the published equations: it is the oracle the engine's graph must match. ids are
// batch rows of seq tokens at positions 0..seq-1, each row causal over itself; w holds every
// tensor of the folder by name (Weights) and raw its config.json (Config): the rotary frequencies
// come from Rope, not from the code under test. It returns the logits, [batch·seq, vocab].
func Logits(cfg *model.Config, raw map[string]any, w map[string][]float64, ids []int32, batch, seq int) []float64 {
	d, hd := cfg.HiddenSize, cfg.HeadDim
	nh, nkv := cfg.NumHeads, cfg.NumKVHeads
	rows := batch * seq
	linear := func(x []float64, name string, out, in int) []float64 {
		y := make([]float64, rows*out)
		wt, b := w[name+".weight"], w[name+".bias"]
		for r := 0; r < rows; r++ {
			for o := 0; o < out; o++ {
				s := 0.0
				for i := 0; i < in; i++ {
					s += x[r*in+i] * wt[o*in+i]
				}
				if b != nil {
					s += b[o]
				}
				y[r*out+o] = s
			}
		}
		return y
	}
	rms := func(x []float64, name string) []float64 {
		y := make([]float64, len(x))
		for r := 0; r < rows; r++ {
			ms := 0.0
			for i := 0; i < d; i++ {
				ms += x[r*d+i] * x[r*d+i]
			}
			inv := 1 / math.Sqrt(ms/float64(d)+cfg.RMSNormEps)
			for i := 0; i < d; i++ {
				y[r*d+i] = x[r*d+i] * inv * w[name][i]
			}
		}
		return y
	}
	invFreq, attnScale := Rope(raw, seq)
	rope := func(x []float64, heads int) {
		half := hd / 2
		for r := 0; r < rows; r++ {
			pos := float64(r % seq)
			for h := 0; h < heads; h++ {
				v := x[(r*heads+h)*hd : (r*heads+h+1)*hd]
				rot := make([]float64, hd)
				for i := 0; i < hd; i++ {
					// rotate_half: [-x2, x1]
					if i < half {
						rot[i] = -v[i+half]
					} else {
						rot[i] = v[i-half]
					}
				}
				for i := 0; i < hd; i++ {
					ang := pos * invFreq[i%half]
					v[i] = v[i]*math.Cos(ang)*attnScale + rot[i]*math.Sin(ang)*attnScale
				}
			}
		}
	}
	h := make([]float64, rows*d)
	for r, id := range ids {
		copy(h[r*d:(r+1)*d], w["model.embed_tokens.weight"][int(id)*d:(int(id)+1)*d])
	}
	for l := 0; l < cfg.NumLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		x := rms(h, p+"input_layernorm.weight")
		q := linear(x, p+"self_attn.q_proj", nh*hd, d)
		k := linear(x, p+"self_attn.k_proj", nkv*hd, d)
		v := linear(x, p+"self_attn.v_proj", nkv*hd, d)
		rope(q, nh)
		rope(k, nkv)
		att := make([]float64, rows*nh*hd)
		for b := 0; b < batch; b++ {
			for hh := 0; hh < nh; hh++ {
				kh := hh / (nh / nkv) // repeat_kv
				for i := 0; i < seq; i++ {
					scores := make([]float64, i+1)
					mx := math.Inf(-1)
					for j := 0; j <= i; j++ {
						s := 0.0
						for c := 0; c < hd; c++ {
							s += q[((b*seq+i)*nh+hh)*hd+c] * k[((b*seq+j)*nkv+kh)*hd+c]
						}
						scores[j] = s / math.Sqrt(float64(hd))
						mx = math.Max(mx, scores[j])
					}
					z := 0.0
					for j := range scores {
						scores[j] = math.Exp(scores[j] - mx)
						z += scores[j]
					}
					for j := range scores {
						for c := 0; c < hd; c++ {
							att[((b*seq+i)*nh+hh)*hd+c] += scores[j] / z * v[((b*seq+j)*nkv+kh)*hd+c]
						}
					}
				}
			}
		}
		o := linear(att, p+"self_attn.o_proj", d, nh*hd)
		for i := range h {
			h[i] += o[i]
		}
		x = rms(h, p+"post_attention_layernorm.weight")
		gate := linear(x, p+"mlp.gate_proj", cfg.IntermediateSize, d)
		up := linear(x, p+"mlp.up_proj", cfg.IntermediateSize, d)
		for i := range gate {
			gate[i] = gate[i] / (1 + math.Exp(-gate[i])) * up[i]
		}
		down := linear(gate, p+"mlp.down_proj", d, cfg.IntermediateSize)
		for i := range h {
			h[i] += down[i]
		}
	}
	h = rms(h, "model.norm.weight")
	head := "lm_head"
	if cfg.TieWordEmbeddings {
		w["tied.weight"] = w["model.embed_tokens.weight"]
		head = "tied"
	}
	return linear(h, head, cfg.VocabSize, d)
}

// Weights reads every float tensor of a model folder as float64 (what Logits consumes).
func Weights(dir string) (map[string][]float64, error) {
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	w := map[string][]float64{}
	for _, n := range ck.Names() {
		v, _, err := ck.Float32(n)
		if err != nil {
			return nil, fmt.Errorf("reflm: %s: %w", n, err)
		}
		w[n] = make([]float64, len(v))
		for i, x := range v {
			w[n][i] = float64(x)
		}
	}
	return w, nil
}

// Loss is the mean next-token cross-entropy of one sequence in float64: position t's logits
// against labels[t+1], skipping labels of -100 (Hugging Face's shift). It returns the loss summed
// over the counted positions and their number.
func Loss(logits []float64, labels []int32, vocab int) (sum float64, n int) {
	for t := 0; t+1 < len(labels); t++ {
		y := labels[t+1]
		if y == -100 {
			continue
		}
		row := logits[t*vocab : (t+1)*vocab]
		mx := math.Inf(-1)
		for _, x := range row {
			mx = math.Max(mx, x)
		}
		z := 0.0
		for _, x := range row {
			z += math.Exp(x - mx)
		}
		sum += mx + math.Log(z) - row[y]
		n++
	}
	return sum, n
}
