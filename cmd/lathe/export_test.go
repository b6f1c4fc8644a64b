package main

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/gguf"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/peft"
)

// A model exported to GGUF generates, trains (QLoRA) and evaluates through --model FILE.gguf;
// an F32 export greedily generates exactly what its folder generates.
func TestExportGGUFAndUseIt(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "stories.gguf")
	_, res, err := run(t, "export", "--model", dir, "--type", "F32", "--out", path)
	require.NoError(t, err)
	require.Equal(t, "F32", res["type"])
	gen := func(m string) string {
		_, r, err := run(t, "generate", "--model", m, "--device", "cpu", "--max-tokens", "24", "--json")
		require.NoError(t, err)
		return r["text"].(string)
	}
	want := gen(dir)
	require.Contains(t, want, "Lily")
	require.Equal(t, want, gen(path))

	data := filepath.Join(t.TempDir(), "d.jsonl")
	writeIDs(t, data, [][]int32{{1, 403, 407, 261, 378, 24, 324}, {1, 67, 403, 261, 378, 24}})
	out := filepath.Join(t.TempDir(), "ad")
	_, r, err := run(t, "train", "--model", path, "--data", data, "--method", "qlora", "--steps", "2", "--device", "cpu", "--out", out)
	require.NoError(t, err)
	require.Equal(t, "qlora", r["method"])
	_, r, err = run(t, "eval", "--model", path, "--adapter", out, "--data", data, "--quantize", "nf4", "--device", "cpu")
	require.NoError(t, err)
	require.Greater(t, r["loss"].(float64), 0.0)

	_, _, err = run(t, "export", "--model", dir, "--type", "IQ2_XS", "--out", path)
	require.ErrorContains(t, err, "IQ2_XS")
}

// A LoRA adapter exports as llama.cpp's converter writes it: read back with gguf-parser-go, its
// metadata, names and shapes fit the base GGUF's tensors, and (alpha/r)·B·A in llama.cpp's layout
// is lathe's ΔW (rsLoRA scale folded in) with the base's Q/K permutation.
func TestExportLoRAToGGUF(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	c := peft.LoRAConfig()
	c.R, c.LoraAlpha, c.UseRSLoRA = 4, 8, true
	c.TargetModules = peft.Names("q_proj", "k_proj", "v_proj", "down_proj")
	a, err := peft.New(c, cfg, cpu.New(), 3)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(4, 5))
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		require.NoError(t, p.Tensor.SetFloat32(v))
	}
	ad := filepath.Join(t.TempDir(), "ad")
	require.NoError(t, a.Save(ad))
	defer a.Release()

	base := filepath.Join(t.TempDir(), "base.gguf")
	_, _, err = run(t, "export", "--model", dir, "--out", base)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "lora.gguf")
	_, res, err := run(t, "export", "--model", dir, "--adapter", ad, "--type", "F32", "--out", out)
	require.NoError(t, err)
	require.Equal(t, 8.0, res["alpha"])

	gf, err := parser.ParseGGUFFile(out)
	require.NoError(t, err)
	kv := gf.Header.MetadataKV
	for key, want := range map[string]string{"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"} {
		v, ok := kv.Get(key)
		require.True(t, ok, key)
		require.Equal(t, want, v.ValueString(), key)
	}
	alpha, ok := kv.Get("adapter.lora.alpha")
	require.True(t, ok)
	require.Equal(t, float32(8), alpha.ValueFloat32())
	bf, err := parser.ParseGGUFFile(base)
	require.NoError(t, err)
	baseDims := map[string][]uint64{}
	for _, ti := range bf.TensorInfos {
		baseDims[ti.Name] = ti.Dimensions
	}
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	read := func(ti parser.GGUFTensorInfo) []float32 {
		n := int(ti.Dimensions[0] * ti.Dimensions[1])
		v := make([]float32, n)
		off := gf.TensorDataStartOffset + int64(ti.Offset)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[off+int64(4*i):]))
		}
		return v
	}
	byName := map[string]parser.GGUFTensorInfo{}
	for _, ti := range gf.TensorInfos {
		byName[ti.Name] = ti
	}
	require.Len(t, gf.TensorInfos, 2*4*cfg.NumLayers)
	for _, md := range a.Modules() {
		g := gguf.GGUFName(md.Name + ".weight")
		ta, tb := byName[g+".lora_a"], byName[g+".lora_b"]
		bd := baseDims[g]
		require.NotNil(t, bd, g)
		// llama.cpp's checks: a.ne[0] == W.ne[0], b.ne[1] == W.ne[1], a.ne[1] == b.ne[0] (the rank).
		require.Equal(t, []uint64{bd[0], 4}, ta.Dimensions, g)
		require.Equal(t, []uint64{4, bd[1]}, tb.Dimensions, g)
		A, B := read(ta), read(tb)
		dw := make([]float32, md.Out*md.In)
		for o := 0; o < md.Out; o++ {
			for i := 0; i < md.In; i++ {
				s := 0.0
				for k := 0; k < 4; k++ {
					s += float64(B[o*4+k]) * float64(A[k*md.In+i])
				}
				dw[o*md.In+i] = float32(8.0 / 4 * s)
			}
		}
		heads := map[bool]int{true: cfg.NumHeads, false: cfg.NumKVHeads}[strings.HasSuffix(md.Name, "q_proj")]
		if strings.HasSuffix(md.Name, "q_proj") || strings.HasSuffix(md.Name, "k_proj") {
			dw = checkpoint.RoPEHalves(dw, heads, md.Out, md.In)
		}
		tA, _ := a.Tensor("base_model.model." + md.Name + ".lora_A.weight")
		tB, _ := a.Tensor("base_model.model." + md.Name + ".lora_B.weight")
		la, _ := tA.Float32()
		lb, _ := tB.Float32()
		for o := 0; o < md.Out; o++ {
			for i := 0; i < md.In; i++ {
				s := 0.0
				for k := 0; k < 4; k++ {
					s += float64(lb[o*4+k]) * float64(la[k*md.In+i])
				}
				want := float64(md.Scale) * s
				require.InDelta(t, want, dw[o*md.In+i], 1e-4*(1+math.Abs(want)), "%s [%d %d]", md.Name, o, i)
			}
		}
	}
	require.InDelta(t, 8/math.Sqrt(4), a.Modules()[0].Scale, 1e-6, "rsLoRA scale")

	ia3 := peft.IA3Config()
	b, err := peft.New(ia3, cfg, cpu.New(), 1)
	require.NoError(t, err)
	defer b.Release()
	iad := filepath.Join(t.TempDir(), "ia3")
	require.NoError(t, b.Save(iad))
	_, _, err = run(t, "export", "--model", dir, "--adapter", iad, "--out", filepath.Join(t.TempDir(), "x.gguf"))
	require.ErrorContains(t, err, "IA3")
}
