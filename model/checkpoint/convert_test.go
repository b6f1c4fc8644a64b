package checkpoint

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/quant"
)

var torchOf = map[string]string{"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func TestShouldQuantize(t *testing.T) {
	w := Tensor{DType: "BF16", Shape: []int{4, 4}}
	require.True(t, ShouldQuantize("model.layers.3.mlp.down_proj.weight", w))
	require.True(t, ShouldQuantize("model.layers.0.self_attn.q_proj.weight", w))
	require.False(t, ShouldQuantize("model.embed_tokens.weight", w))
	require.False(t, ShouldQuantize("lm_head.weight", w))
	require.False(t, ShouldQuantize("model.layers.0.input_layernorm.weight", w))
	require.False(t, ShouldQuantize("model.layers.0.self_attn.q_proj.bias", w))
	require.False(t, ShouldQuantize("model.layers.0.self_attn.q_proj.weight", Tensor{DType: "BF16", Shape: []int{16}}))
	require.False(t, ShouldQuantize("model.layers.0.self_attn.q_proj.weight", Tensor{DType: "I8", Shape: []int{4, 4}}))
}

func TestQuantizeFolder(t *testing.T) {
	in, out := filepath.Join(t.TempDir(), "in"), filepath.Join(t.TempDir(), "out")
	m := buildTiny(2)
	writeTiny(t, in, m)

	rep, err := QuantizeFolder(in, out, QuantizeOptions{Type: quant.NF4, DoubleQuant: true})
	require.NoError(t, err)
	require.Equal(t, out, rep.Out)
	require.Equal(t, 14, rep.QuantizedTensors)
	require.Equal(t, len(m.tensors)-14, rep.KeptTensors)
	var qparams, kparams int64
	for name, tt := range m.tensors {
		if slices.Contains(m.linear, name) {
			qparams += tt.Numel()
		} else {
			kparams += tt.Numel()
		}
	}
	require.Equal(t, qparams, rep.QuantizedParams)
	require.Equal(t, kparams, rep.KeptParams)
	require.Equal(t, "nf4", rep.QuantType)
	require.Equal(t, 64, rep.Blocksize)
	require.Equal(t, "bfloat16", rep.ComputeDType)
	require.Equal(t, []string{"generation_config.json", "tokenizer.json"}, rep.CopiedFiles)
	// Small tensors: partial blocks and one nested block each cost more than the asymptotic 4.127.
	require.Greater(t, rep.BitsPerParam, 4.127)
	require.Less(t, rep.BitsPerParam, 4.5)
	require.Greater(t, rep.BytesIn, rep.BytesOut)

	ck, err := Open(out)
	require.NoError(t, err)
	defer ck.Close()
	for name, orig := range m.tensors {
		if !slices.Contains(m.linear, name) {
			got, ok := ck.Tensor(name)
			require.True(t, ok, name)
			require.Equal(t, orig, got, "%s kept byte for byte", name)
			continue
		}
		n := int(orig.Numel())
		nb := (n + 63) / 64
		w, _ := ck.Tensor(name)
		require.Equal(t, "U8", w.DType)
		require.Equal(t, []int{(n + 1) / 2, 1}, w.Shape)
		am, _ := ck.Tensor(name + ".absmax")
		require.Equal(t, "U8", am.DType)
		require.Equal(t, []int{nb}, am.Shape)
		na, _ := ck.Tensor(name + ".nested_absmax")
		require.Equal(t, "F32", na.DType)
		require.Equal(t, []int{1}, na.Shape)
		qm, _ := ck.Tensor(name + ".quant_map")
		require.Equal(t, []int{16}, qm.Shape)
		nqm, _ := ck.Tensor(name + ".nested_quant_map")
		require.Equal(t, []int{256}, nqm.Shape)
		st, ok := ck.Tensor(name + ".quant_state.bitsandbytes__nf4")
		require.True(t, ok)
		prefix := `{"quant_type": "nf4", "blocksize": 64, "dtype": "` + torchOf[orig.DType] + `", "shape": ` +
			strings.ReplaceAll(jsonInts(orig.Shape), ",", ", ") +
			`, "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": `
		require.True(t, strings.HasPrefix(string(st.Data), prefix), "%s: %s", name, st.Data)

		// The stored weight decodes to the original within the NF4 bound.
		group := map[string]quant.RawTensor{}
		for _, k := range quant.BnbKeys(name, quant.NF4, true) {
			tt, _ := ck.Tensor(k)
			group[k] = quant.RawTensor(tt)
		}
		q, err := quant.FromBnb(name, group)
		require.NoError(t, err)
		require.Equal(t, orig.Shape, q.Shape)
		deq, err := q.Dequantize()
		require.NoError(t, err)
		checkNF4Bound(t, name, m.values[name], deq)
	}
	require.Len(t, ck.Names(), len(m.tensors)+14*5)

	cfg := readJSON(t, filepath.Join(out, ConfigFile))
	require.Equal(t, map[string]any{
		"_load_in_4bit": true, "_load_in_8bit": false, "bnb_4bit_compute_dtype": "bfloat16",
		"bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true,
		"llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false,
		"llm_int8_skip_modules": nil, "llm_int8_threshold": 6.0, "load_in_4bit": true, "load_in_8bit": false,
		"quant_method": "bitsandbytes",
	}, cfg["quantization_config"])
	require.Equal(t, "bfloat16", cfg["torch_dtype"])
	require.Equal(t, map[string]any{"nested": []any{1.0, 2.5, nil}}, cfg["custom_field"])
	raw, err := os.ReadFile(filepath.Join(out, ConfigFile))
	require.NoError(t, err)
	require.Contains(t, string(raw), `"rms_norm_eps": 1e-05`, "numbers are kept verbatim")
	require.Contains(t, string(raw), `"rope_theta": 10000.0`)
	require.Contains(t, string(raw), `"llm_int8_threshold": 6.0`)

	for _, f := range []string{"tokenizer.json", "generation_config.json"} {
		a, err := os.ReadFile(filepath.Join(in, f))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(out, f))
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}, names)

	// A quantized folder is refused.
	_, err = QuantizeFolder(out, filepath.Join(t.TempDir(), "again"), QuantizeOptions{})
	require.ErrorContains(t, err, "already quantized")
}

func jsonInts(v []int) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// checkNF4Bound: each value decodes within half the largest NF4 gap of its block's absmax, plus
// the error double quantization adds to that absmax (at most 1%).
func checkNF4Bound(t *testing.T, name string, orig, deq []float32) {
	t.Helper()
	require.Len(t, deq, len(orig))
	for b := 0; b*64 < len(orig); b++ {
		blk := orig[b*64 : min(b*64+64, len(orig))]
		var am float64
		for _, x := range blk {
			am = max(am, math.Abs(float64(x)))
		}
		for i, x := range blk {
			d := deq[b*64+i]
			require.LessOrEqual(t, math.Abs(float64(x-d)), am*(0.152+0.01), "%s[%d]", name, b*64+i)
		}
	}
}

func TestQuantizeFolderFP4Plain(t *testing.T) {
	in, out := filepath.Join(t.TempDir(), "in"), filepath.Join(t.TempDir(), "out")
	m := buildTiny(3)
	writeTiny(t, in, m)
	rep, err := QuantizeFolder(in, out, QuantizeOptions{Type: quant.FP4, Blocksize: 128, ComputeDType: "float16"})
	require.NoError(t, err)
	// Plain absmax: 4 bits + 32 bits per block of 128 (partial blocks make it a little more).
	var packed, blocks int64
	for _, name := range m.linear {
		n := m.tensors[name].Numel()
		packed += (n + 1) / 2
		blocks += (n + 127) / 128
	}
	require.InDelta(t, 8*float64(packed+4*blocks)/float64(rep.QuantizedParams), rep.BitsPerParam, 1e-12)
	ck, err := Open(out)
	require.NoError(t, err)
	defer ck.Close()
	name := "model.layers.1.mlp.down_proj.weight"
	am, _ := ck.Tensor(name + ".absmax")
	require.Equal(t, "F32", am.DType)
	_, ok := ck.Tensor(name + ".nested_absmax")
	require.False(t, ok)
	st, _ := ck.Tensor(name + ".quant_state.bitsandbytes__fp4")
	require.Equal(t, `{"quant_type": "fp4", "blocksize": 128, "dtype": "float32", "shape": [40, 57]}`, string(st.Data))
	qc := readJSON(t, filepath.Join(out, ConfigFile))["quantization_config"].(map[string]any)
	require.Equal(t, "fp4", qc["bnb_4bit_quant_type"])
	require.Equal(t, false, qc["bnb_4bit_use_double_quant"])
	require.Equal(t, "float16", qc["bnb_4bit_compute_dtype"])
}

func TestDequantizeFolder(t *testing.T) {
	root := t.TempDir()
	in, q4, deq := filepath.Join(root, "in"), filepath.Join(root, "q4"), filepath.Join(root, "deq")
	m := buildTiny(4)
	writeTiny(t, in, m)
	_, err := QuantizeFolder(in, q4, QuantizeOptions{DoubleQuant: true})
	require.NoError(t, err)

	rep, err := DequantizeFolder(q4, deq)
	require.NoError(t, err)
	require.Equal(t, 14, rep.DequantizedTensors)
	require.Equal(t, len(m.tensors)-14, rep.OtherTensors)
	require.Equal(t, []string{"generation_config.json", "tokenizer.json"}, rep.CopiedFiles)

	ck, err := Open(deq)
	require.NoError(t, err)
	defer ck.Close()
	require.Len(t, ck.Names(), len(m.tensors))
	for name, orig := range m.tensors {
		got, ok := ck.Tensor(name)
		require.True(t, ok, name)
		require.Equal(t, "F32", got.DType, name)
		require.Equal(t, orig.Shape, got.Shape, name)
		v, err := ToFloat32(got)
		require.NoError(t, err)
		if slices.Contains(m.linear, name) {
			checkNF4Bound(t, name, m.values[name], v)
			require.NotEqual(t, m.values[name], v, "%s went through 4 bits", name)
		} else {
			require.Equal(t, m.values[name], v, "%s converted exactly", name)
		}
	}
	cfg := readJSON(t, filepath.Join(deq, ConfigFile))
	require.NotContains(t, cfg, "quantization_config")
	require.Equal(t, "float32", cfg["torch_dtype"])
	require.Equal(t, "llama", cfg["model_type"])

	// A folder that is not quantized is refused.
	_, err = DequantizeFolder(in, filepath.Join(root, "x"))
	require.ErrorContains(t, err, "holds no bitsandbytes 4-bit weights")
}

func TestDequantizeRejectsBrokenQuantState(t *testing.T) {
	root := t.TempDir()
	in, q4 := filepath.Join(root, "in"), filepath.Join(root, "q4")
	writeTiny(t, in, buildTiny(5))
	_, err := QuantizeFolder(in, q4, QuantizeOptions{DoubleQuant: true})
	require.NoError(t, err)
	ck, err := Open(q4)
	require.NoError(t, err)
	tensors := map[string]Tensor{}
	for _, n := range ck.Names() {
		tt, _ := ck.Tensor(n)
		tensors[n] = Tensor{DType: tt.DType, Shape: tt.Shape, Data: slices.Clone(tt.Data)}
	}
	require.NoError(t, ck.Close())
	name := "model.layers.0.mlp.up_proj.weight"
	delete(tensors, name+".nested_quant_map")
	require.NoError(t, WriteSafetensors(filepath.Join(q4, WeightsFile), tensors, nil))
	_, err = DequantizeFolder(q4, filepath.Join(root, "deq"))
	require.ErrorContains(t, err, "missing tensor "+name+".nested_quant_map")
}

func TestShardedInput(t *testing.T) {
	root := t.TempDir()
	in, out := filepath.Join(root, "in"), filepath.Join(root, "out")
	m := buildTiny(6)
	writeSharded(t, in, m)
	ck, err := Open(in)
	require.NoError(t, err)
	require.True(t, ck.Sharded)
	require.Len(t, ck.Names(), len(m.tensors))
	for name, want := range m.tensors {
		got, ok := ck.Tensor(name)
		require.True(t, ok)
		require.Equal(t, want, got)
	}
	v, shape, err := ck.Float32("model.layers.1.self_attn.k_proj.weight")
	require.NoError(t, err)
	require.Equal(t, []int{13, 40}, shape)
	require.Equal(t, m.values["model.layers.1.self_attn.k_proj.weight"], v)
	require.NoError(t, ck.Close())

	rep, err := QuantizeFolder(in, out, QuantizeOptions{})
	require.NoError(t, err)
	require.Equal(t, 14, rep.QuantizedTensors)
	require.Empty(t, rep.CopiedFiles, "shards and index are weights, not extra files")
	_, err = os.Stat(filepath.Join(out, IndexFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	ck, err = Open(out)
	require.NoError(t, err)
	defer ck.Close()
	require.False(t, ck.Sharded)
	require.Len(t, ck.Names(), len(m.tensors)+14*3, "plain NF4: absmax, quant_map, quant_state")
}

func TestOpenErrors(t *testing.T) {
	root := t.TempDir()

	// No config.json.
	empty := filepath.Join(root, "empty")
	require.NoError(t, os.MkdirAll(empty, 0o755))
	_, err := Open(empty)
	require.ErrorContains(t, err, filepath.Join(empty, "config.json"))
	require.ErrorContains(t, err, "missing config.json")

	// Bad config.json.
	bad := filepath.Join(root, "badcfg")
	writeTiny(t, bad, buildTiny(7))
	require.NoError(t, os.WriteFile(filepath.Join(bad, ConfigFile), []byte(`{"a":`), 0o644))
	_, err = Open(bad)
	require.ErrorContains(t, err, filepath.Join(bad, "config.json"))

	// No weights at all.
	now := filepath.Join(root, "noweights")
	require.NoError(t, os.MkdirAll(now, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(now, ConfigFile), []byte(tinyConfig), 0o644))
	_, err = Open(now)
	require.ErrorContains(t, err, "no model.safetensors or model.safetensors.index.json")

	// Corrupt header and truncated single file.
	corrupt := filepath.Join(root, "corrupt")
	writeTiny(t, corrupt, buildTiny(8))
	wf := filepath.Join(corrupt, WeightsFile)
	b, err := os.ReadFile(wf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(wf, append(b[:8:8], []byte(strings.Repeat("x", len(b)-8))...), 0o644))
	_, err = Open(corrupt)
	require.ErrorContains(t, err, wf)
	require.ErrorContains(t, err, "corrupt header")
	require.NoError(t, os.WriteFile(wf, b[:len(b)-10], 0o644))
	_, err = Open(corrupt)
	require.ErrorContains(t, err, wf)
	require.ErrorContains(t, err, "truncated")

	// Missing shard, a shard that lacks a listed tensor, and a shard name escaping the folder.
	sh := filepath.Join(root, "sharded")
	writeSharded(t, sh, buildTiny(9))
	shard2 := filepath.Join(sh, "model-00002-of-00002.safetensors")
	saved, err := os.ReadFile(shard2)
	require.NoError(t, err)
	require.NoError(t, os.Remove(shard2))
	_, err = Open(sh)
	require.ErrorContains(t, err, shard2)
	require.ErrorContains(t, err, "missing shard")
	require.NoError(t, os.WriteFile(shard2, saved, 0o644))

	idxPath := filepath.Join(sh, IndexFile)
	idx := readJSON(t, idxPath)
	wm := idx["weight_map"].(map[string]any)
	wm["model.ghost.weight"] = "model-00001-of-00002.safetensors"
	b, err = json.Marshal(idx)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(idxPath, b, 0o644))
	_, err = Open(sh)
	require.ErrorContains(t, err, "lacks tensor model.ghost.weight")

	wm["model.ghost.weight"] = "../outside.safetensors"
	b, err = json.Marshal(idx)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(idxPath, b, 0o644))
	_, err = Open(sh)
	require.ErrorContains(t, err, `bad shard file name "../outside.safetensors"`)

	require.NoError(t, os.WriteFile(idxPath, []byte(`{"metadata":{}}`), 0o644))
	_, err = Open(sh)
	require.ErrorContains(t, err, "empty or missing weight_map")
}

func TestQuantizeFolderRejects(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	writeTiny(t, in, buildTiny(10))
	_, err := QuantizeFolder(in, in, QuantizeOptions{})
	require.ErrorContains(t, err, "is the input folder")
	_, err = QuantizeFolder(in, filepath.Join(root, "o"), QuantizeOptions{Blocksize: 48})
	require.ErrorContains(t, err, "invalid blocksize 48")
	_, err = QuantizeFolder(in, filepath.Join(root, "o"), QuantizeOptions{Type: quant.Type(7)})
	require.ErrorContains(t, err, "unknown type")
	_, err = QuantizeFolder(in, filepath.Join(root, "o"), QuantizeOptions{ComputeDType: "int8"})
	require.ErrorContains(t, err, `compute dtype "int8" unsupported`)

	// A config that declares quantization is refused even without quantized tensors.
	cfg := strings.Replace(tinyConfig, `"model_type": "llama",`, `"model_type": "llama", "quantization_config": {"quant_method": "gptq"},`, 1)
	require.NoError(t, os.WriteFile(filepath.Join(in, ConfigFile), []byte(cfg), 0o644))
	_, err = QuantizeFolder(in, filepath.Join(root, "o"), QuantizeOptions{})
	require.ErrorContains(t, err, `already quantized (quantization_config, quant_method "gptq")`)

	// An output folder with a sharded index would shadow the single file.
	require.NoError(t, os.WriteFile(filepath.Join(in, ConfigFile), []byte(tinyConfig), 0o644))
	o := filepath.Join(root, "o2")
	require.NoError(t, os.MkdirAll(o, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(o, IndexFile), []byte(`{}`), 0o644))
	_, err = QuantizeFolder(in, o, QuantizeOptions{})
	require.ErrorContains(t, err, "holds a sharded checkpoint")

	// Non-finite weights are refused, naming the tensor.
	m := buildTiny(11)
	name := "model.layers.0.mlp.gate_proj.weight"
	v := slices.Clone(m.values[name])
	v[5] = float32(math.Inf(1))
	m.tensors[name], _ = encode("F32", m.tensors[name].Shape, v)
	bad := filepath.Join(root, "bad")
	writeTiny(t, bad, m)
	_, err = QuantizeFolder(bad, filepath.Join(root, "o3"), QuantizeOptions{})
	require.ErrorContains(t, err, "quantize "+name+": quantize: element 5 is +Inf")
}
