package peft

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/quant"
)

// bf16 rounds to bfloat16 (nearest even) as the checkpoint writer does, independently.
func bf16(x float64) float32 {
	b := math.Float32bits(float32(x))
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b &^ 0xffff)
}

// A QLoRA adapter merged over its NF4 base writes bf16(dequantize(W) + s·B·A) for each adapted
// weight, bf16(dequantize(W)) for the other 4-bit weights, the rest unchanged; --requantize nf4
// writes the merged weights' NF4 quantization.
func TestMergeFolder4bit(t *testing.T) {
	dir := tinyDir(t)
	q := filepath.Join(t.TempDir(), "nf4")
	_, err := checkpoint.QuantizeFolder(dir, q, checkpoint.QuantizeOptions{Type: quant.NF4, Blocksize: 64, DoubleQuant: true})
	require.NoError(t, err)
	deq := filepath.Join(t.TempDir(), "deq")
	_, err = checkpoint.DequantizeFolder(q, deq)
	require.NoError(t, err)
	m := loadModel(t, q, "")
	a, err := New(loraConfig("q_proj", "v_proj", "down_proj"), m.Cfg, m.Backend, 5)
	require.NoError(t, err)
	defer a.Release()
	randomize(t, a, 7)

	// The float64 reference: dequantized base (read from DequantizeFolder's output) plus s·B·A.
	ref, err := checkpoint.Open(deq)
	require.NoError(t, err)
	defer ref.Close()
	want := map[string][]float64{}
	for _, name := range ref.Names() {
		v, _, err := ref.Float32(name)
		require.NoError(t, err)
		w := make([]float64, len(v))
		for i, x := range v {
			w[i] = float64(x)
		}
		want[name] = w
	}
	for _, md := range a.modules {
		keys := md.keys(TypeLoRA)
		A, B := tensor(t, a, keys[0]), tensor(t, a, keys[1])
		w := want[md.Name+".weight"]
		for o := 0; o < md.Out; o++ {
			for i := 0; i < md.In; i++ {
				s := 0.0
				for k := 0; k < md.R; k++ {
					s += float64(B[o*md.R+k]) * float64(A[k*md.In+i])
				}
				w[o*md.In+i] += float64(md.Scale) * s
			}
		}
	}

	out := filepath.Join(t.TempDir(), "merged")
	rep, err := MergeFolder4bit(q, out, a, "")
	require.NoError(t, err)
	require.Equal(t, 3*m.Cfg.NumLayers, rep.Changed)
	require.Equal(t, 7*m.Cfg.NumLayers, rep.Dequantized)
	got, err := checkpoint.Open(out)
	require.NoError(t, err)
	defer got.Close()
	require.Nil(t, got.Config["quantization_config"])
	require.Equal(t, "bfloat16", got.Config["torch_dtype"])
	orig, err := checkpoint.Open(q)
	require.NoError(t, err)
	defer orig.Close()
	adapted := 0
	for _, name := range got.Names() {
		tt, _ := got.Tensor(name)
		v, _, err := got.Float32(name)
		require.NoError(t, err)
		if ot, ok := orig.Tensor(name); ok && ot.DType != "U8" {
			require.Equal(t, ot.DType, tt.DType, name)
			ov, _, _ := orig.Float32(name)
			require.Equal(t, ov, v, "%s kept", name)
			continue
		}
		require.Equal(t, "BF16", tt.DType, name)
		w := want[name]
		for i := range v {
			require.Equal(t, bf16(w[i]), v[i], "%s element %d", name, i)
		}
		adapted++
	}
	require.Equal(t, 7*m.Cfg.NumLayers, adapted)

	out4 := filepath.Join(t.TempDir(), "merged4")
	rep, err = MergeFolder4bit(q, out4, a, "nf4")
	require.NoError(t, err)
	require.Equal(t, "nf4", rep.DType)
	g4, err := checkpoint.Open(out4)
	require.NoError(t, err)
	defer g4.Close()
	q4, _, err := g4.Bnb4bit()
	require.NoError(t, err)
	require.Len(t, q4, 7*m.Cfg.NumLayers)
	name := "model.layers.1.mlp.down_proj.weight"
	w := want[name]
	v := make([]float32, len(w))
	for i := range w {
		v[i] = float32(w[i])
	}
	wq, err := quant.Quantize(v, q4[name].Shape, quant.NF4, 64, true)
	require.NoError(t, err)
	wd, err := wq.Dequantize()
	require.NoError(t, err)
	gd, err := q4[name].Dequantize()
	require.NoError(t, err)
	require.Equal(t, wd, gd)
	_, err = MergeFolder4bit(q, filepath.Join(t.TempDir(), "x"), a, "int3")
	require.Error(t, err)
}
