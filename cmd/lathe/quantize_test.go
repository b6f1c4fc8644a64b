package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/checkpoint"
)

// writeModel writes a tiny random Llama-like folder: two linear weights (one 24x40, one whose
// size is not a multiple of 64), an embedding, a norm and lm_head.
func writeModel(t *testing.T, dir string) {
	t.Helper()
	r := rand.New(rand.NewPCG(42, 7))
	tensor := func(shape ...int) checkpoint.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64()*0.02) + 1e-4
		}
		return checkpoint.FromFloat32(v, shape)
	}
	tensors := map[string]checkpoint.Tensor{
		"model.embed_tokens.weight":              tensor(32, 40),
		"model.layers.0.self_attn.q_proj.weight": tensor(24, 40),
		"model.layers.0.mlp.down_proj.weight":    tensor(40, 23),
		"model.layers.0.input_layernorm.weight":  tensor(40),
		"model.norm.weight":                      tensor(40),
		"lm_head.weight":                         tensor(32, 40),
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"),
		[]byte(`{"model_type": "llama", "hidden_size": 40, "torch_dtype": "float32"}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{}`), 0o644))
	require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(dir, "model.safetensors"), tensors, nil))
}

// run executes the CLI in-process and returns its output and the parsed last line.
func run(t *testing.T, args ...string) (string, map[string]any, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var last map[string]any
	if err == nil {
		require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last), "last line is JSON: %q", out.String())
	}
	return out.String(), last, err
}

func TestQuantizeDequantizeCommands(t *testing.T) {
	root := t.TempDir()
	in, q4, deq := filepath.Join(root, "in"), filepath.Join(root, "q4"), filepath.Join(root, "deq")
	writeModel(t, in)

	text, res, err := run(t, "quantize", "--type", "nf4", "--double-quant", "--blocksize", "64", in, q4)
	require.NoError(t, err)
	require.Contains(t, text, "quantized 2 tensors (1880 params) to nf4 + double quant")
	require.Equal(t, q4, res["out"])
	require.Equal(t, 2.0, res["quantized_tensors"])
	require.Equal(t, 4.0, res["kept_tensors"])
	require.Equal(t, 1880.0, res["quantized_params"])
	require.Equal(t, true, res["double_quant"])
	require.Equal(t, "nf4", res["quant_type"])
	bits := res["bits_per_param"].(float64)
	require.Greater(t, bits, 4.1)
	require.Less(t, bits, 4.5)
	require.Equal(t, []any{"tokenizer.json"}, res["copied_files"])
	_, err = os.Stat(filepath.Join(q4, "model.safetensors"))
	require.NoError(t, err)

	text, res, err = run(t, "dequantize", q4, deq)
	require.NoError(t, err)
	require.Contains(t, text, "dequantized 2 tensors (1880 params) to float32")
	require.Equal(t, deq, res["out"])
	require.Equal(t, 2.0, res["dequantized_tensors"])
	require.Equal(t, 4.0, res["other_tensors"])
	ck, err := checkpoint.Open(deq)
	require.NoError(t, err)
	defer ck.Close()
	w, ok := ck.Tensor("model.layers.0.mlp.down_proj.weight")
	require.True(t, ok)
	require.Equal(t, "F32", w.DType)
	require.Equal(t, []int{40, 23}, w.Shape)

	_, res, err = run(t, "quantize", "--type", "fp4", "--blocksize", "128", in, filepath.Join(root, "fp4"))
	require.NoError(t, err)
	require.Equal(t, "fp4", res["quant_type"])
	require.Equal(t, 128.0, res["blocksize"])
}

func TestQuantizeCommandErrors(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	writeModel(t, in)
	_, _, err := run(t, "quantize", "--type", "int4", in, filepath.Join(root, "o"))
	require.ErrorContains(t, err, `unknown 4-bit quant type "int4"`)
	_, _, err = run(t, "quantize", "--blocksize", "48", in, filepath.Join(root, "o"))
	require.ErrorContains(t, err, "invalid blocksize 48")
	_, _, err = run(t, "quantize", in)
	require.ErrorContains(t, err, "accepts 2 arg(s), received 1")
	_, _, err = run(t, "quantize", filepath.Join(root, "missing"), filepath.Join(root, "o"))
	require.ErrorContains(t, err, "config.json")
	_, _, err = run(t, "dequantize", in, filepath.Join(root, "o"))
	require.ErrorContains(t, err, "no bitsandbytes 4-bit weights")
}
