package gguf_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/internal/testdata"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/gguf"
	"github.com/lathe-ml/lathe/model/llama2c"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

func h16(b []byte) float64 { return float64(float16.Frombits(binary.LittleEndian.Uint16(b)).Float32()) }

// ref64 decodes element i of a tensor of type t element by element in float64, straight from
// ggml's block layouts (ggml-common.h), independently of the row-wise decoder under test.
func ref64(t parser.GGMLType, data []byte, i int) float64 {
	switch t {
	case parser.GGMLTypeQ8_0:
		b := data[i/32*34:]
		return h16(b) * float64(int8(b[2+i%32]))
	case parser.GGMLTypeQ4_0:
		b := data[i/32*18:]
		j := i % 32
		q := b[2+j%16]
		if j >= 16 {
			q >>= 4
		}
		return h16(b) * float64(int(q&0xF)-8)
	case parser.GGMLTypeQ4_K:
		b := data[i/256*144:]
		d, dmin, s := h16(b), h16(b[2:]), b[4:16]
		e := i % 256
		sub := e / 32
		var sc, m int
		if sub < 4 {
			sc, m = int(s[sub]&63), int(s[sub+4]&63)
		} else {
			sc = int(s[sub+4]&0xF) | int(s[sub-4]>>6)<<4
			m = int(s[sub+4]>>4) | int(s[sub]>>6)<<4
		}
		q := b[16+e/64*32+e%32]
		if (e % 64) >= 32 {
			q >>= 4
		}
		return d*float64(sc)*float64(q&0xF) - dmin*float64(m)
	case parser.GGMLTypeQ6_K:
		b := data[i/256*210:]
		e := i % 256
		half, r := e/128, e%128
		quarter, l := r/32, r%32
		lo := b[half*64+l+(quarter%2)*32]
		if quarter >= 2 {
			lo >>= 4
		}
		hi := (b[128+half*32+l] >> (2 * quarter)) & 3
		q := int(lo&0xF|hi<<4) - 32
		return h16(b[208:]) * float64(int8(b[192+e/16])) * float64(q)
	}
	panic("type")
}

func randomBlocks(r *rand.Rand, t parser.GGMLType, n int) []byte {
	b := make([]byte, map[parser.GGMLType]int{parser.GGMLTypeQ8_0: 34, parser.GGMLTypeQ4_0: 18, parser.GGMLTypeQ4_K: 144, parser.GGMLTypeQ6_K: 210}[t]*n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	// Finite, moderate scales where the block's f16 fields are.
	put := func(off int) {
		binary.LittleEndian.PutUint16(b[off:], float16.Fromfloat32(float32(r.NormFloat64()*0.05)).Bits())
	}
	for k := 0; k < n; k++ {
		switch t {
		case parser.GGMLTypeQ8_0:
			put(k * 34)
		case parser.GGMLTypeQ4_0:
			put(k * 18)
		case parser.GGMLTypeQ4_K:
			put(k * 144)
			put(k*144 + 2)
		case parser.GGMLTypeQ6_K:
			put(k*210 + 208)
		}
	}
	return b
}

func TestDequantizeMatchesGGMLReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []parser.GGMLType{parser.GGMLTypeQ8_0, parser.GGMLTypeQ4_0, parser.GGMLTypeQ4_K, parser.GGMLTypeQ6_K} {
		per := map[parser.GGMLType]int{parser.GGMLTypeQ8_0: 32, parser.GGMLTypeQ4_0: 32, parser.GGMLTypeQ4_K: 256, parser.GGMLTypeQ6_K: 256}[typ]
		nb := 2<<16/per + 3 // past two of Dequantize's chunks (it decodes 65536 elements a task), the last partial
		data := randomBlocks(r, typ, nb)
		got, err := gguf.Dequantize(typ, data, nb*per)
		require.NoError(t, err)
		nonzero := 0
		for i, g := range got {
			if want := ref64(typ, data, i); math.Abs(want-float64(g)) > 1e-6*math.Max(1, math.Abs(want)) {
				require.InDelta(t, want, float64(g), 1e-6*math.Max(1, math.Abs(want)), "%s element %d", typ, i)
			}
			if g != 0 {
				nonzero++
			}
		}
		require.Greater(t, nonzero, len(got)/2, "%s: mostly nonzero", typ)
		// The encoder's blocks decode close to what they encode.
		x := make([]float32, nb*per)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		enc, err := gguf.Quantize(typ, x)
		require.NoError(t, err)
		dec, err := gguf.Dequantize(typ, enc, len(x))
		require.NoError(t, err)
		tol := map[parser.GGMLType]float64{parser.GGMLTypeQ8_0: 0.03, parser.GGMLTypeQ4_0: 0.6, parser.GGMLTypeQ4_K: 0.6, parser.GGMLTypeQ6_K: 0.15}[typ]
		for i := range x {
			if math.Abs(float64(x[i]-dec[i])) > tol || math.Abs(ref64(typ, enc, i)-float64(dec[i])) > 1e-5 {
				require.InDelta(t, x[i], dec[i], tol, "%s round trip element %d", typ, i)
				require.InDelta(t, ref64(typ, enc, i), float64(dec[i]), 1e-5, "%s element %d", typ, i)
			}
		}
	}
	_, err := gguf.Dequantize(parser.GGMLTypeQ5_K, make([]byte, 176), 256)
	require.ErrorContains(t, err, "Q5_K")
	_, err = gguf.ParseType("IQ2_XS")
	require.ErrorContains(t, err, "IQ2_XS")
}

// refFolder writes dir's model with the weights the GGUF file at path holds, decoded by ref64 (or
// read as F32/F16) and put back in transformers' RoPE layout: what the GGUF file should load as.
func refFolder(t *testing.T, dir, path string, heads, kvHeads int) string {
	gf, err := parser.ParseGGUFFile(path)
	require.NoError(t, err)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	ck, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	out := map[string]checkpoint.Tensor{}
	names := map[string]string{}
	for _, n := range ck.Names() {
		names[gguf.GGUFName(n)] = n
	}
	for _, ti := range gf.TensorInfos {
		n := 1
		for _, d := range ti.Dimensions {
			n *= int(d)
		}
		data := raw[gf.TensorDataStartOffset+int64(ti.Offset):]
		v := make([]float32, n)
		for i := range v {
			switch ti.Type {
			case parser.GGMLTypeF32:
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
			case parser.GGMLTypeF16:
				v[i] = float32(h16(data[2*i:]))
			case parser.GGMLTypeBF16:
				v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(data[2*i:])) << 16)
			default:
				v[i] = float32(ref64(ti.Type, data, i))
			}
		}
		name := names[ti.Name]
		require.NotEmpty(t, name, ti.Name)
		src, _ := ck.Tensor(name)
		shape := src.Shape
		if len(shape) == 2 && (filepath.Ext(name) == ".weight") {
			switch {
			case ti.Name[len(ti.Name)-len("attn_q.weight"):] == "attn_q.weight":
				v = checkpoint.RoPEHalves(v, heads, shape[0], shape[1])
			case ti.Name[len(ti.Name)-len("attn_k.weight"):] == "attn_k.weight":
				v = checkpoint.RoPEHalves(v, kvHeads, shape[0], shape[1])
			}
		}
		out[name] = checkpoint.FromFloat32(v, shape)
	}
	ref := t.TempDir()
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(ref, f), b, 0o644))
	}
	require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(ref, checkpoint.WeightsFile), out, nil))
	return ref
}

func logitsOf(t *testing.T, path string, ids []int32) []float32 {
	m, err := model.Load(path, cpu.New(), model.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()
	y, err := m.Logits(ids, 1, nil)
	require.NoError(t, err)
	return y
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func checkRoundTrip(t *testing.T, dir string, types []string, texts []string) {
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	hfTok, err := tokenizer.Load(dir)
	require.NoError(t, err)
	ids := []int32{}
	for _, s := range texts {
		e, err := hfTok.Encode(s, true)
		require.NoError(t, err)
		for _, id := range e {
			ids = append(ids, int32(id))
		}
	}
	ids = ids[:min(len(ids), 48)]
	orig := logitsOf(t, dir, ids)
	for _, ty := range types {
		typ, err := gguf.ParseType(ty)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "m-"+ty+".gguf")
		_, err = gguf.WriteModel(dir, path, typ)
		require.NoError(t, err)
		gcfg, err := model.LoadConfig(path)
		require.NoError(t, err)
		require.Equal(t, cfg.HiddenSize, gcfg.HiddenSize)
		require.Equal(t, cfg.NumKVHeads, gcfg.NumKVHeads)
		require.Equal(t, float32(cfg.RMSNormEps), float32(gcfg.RMSNormEps), "eps")
		require.Equal(t, cfg.TieWordEmbeddings, gcfg.TieWordEmbeddings)
		got := logitsOf(t, path, ids)
		want := logitsOf(t, refFolder(t, dir, path, cfg.NumHeads, cfg.NumKVHeads), ids)
		require.Less(t, maxDiff(want, got), 1e-4, "%s: the GGUF's logits against its dequantized weights' logits", ty)
		if ty == "Q8_0" {
			// QLoRA: the dequantized GGUF weights re-quantized to NF4 as any checkpoint's.
			nf4 := model.LoadOptions{Quantize: "nf4"}
			a, err := model.Load(path, cpu.New(), nf4)
			require.NoError(t, err)
			defer a.Release()
			require.NotEmpty(t, a.Quant, "4-bit linear layers")
			b, err := model.Load(refFolder(t, dir, path, cfg.NumHeads, cfg.NumKVHeads), cpu.New(), nf4)
			require.NoError(t, err)
			defer b.Release()
			ya, err := a.Logits(ids, 1, nil)
			require.NoError(t, err)
			yb, err := b.Logits(ids, 1, nil)
			require.NoError(t, err)
			require.Less(t, maxDiff(ya, yb), 1e-4, "NF4 from GGUF")
		}
		// And the quantization kept the model: close to the original's logits.
		d := maxDiff(orig, got)
		t.Logf("%s: max |logit - original logit| = %.3g", ty, d)
		if ty == "F32" {
			require.Less(t, d, 1e-4)
		}
		gt, err := tokenizer.Load(path)
		require.NoError(t, err)
		for _, s := range texts {
			a, err := hfTok.Encode(s, true)
			require.NoError(t, err)
			b, err := gt.Encode(s, true)
			require.NoError(t, err)
			require.Equal(t, a, b, "%s: encode %q", ty, s)
			da, _ := hfTok.Decode(a, false)
			db, err := gt.Decode(b, false)
			require.NoError(t, err)
			require.Equal(t, da, db)
		}
	}
}

var texts = []string{
	"Once upon a time, there was a little girl named Lily. She loved to play outside.",
	"  Spaces,\ttabs\nand newlines; numbers 12345 and ünïcödé — 日本語 😀.",
	"Tom's dog didn't bark, they'll say.",
}

// The real stories260K (SentencePiece vocabulary, llama's permuted q/k, tied embedding) written
// as GGUF loads to the logits of its weights; its rows of 64 take Q8_0 where K-quants need 256.
func TestStories260KThroughGGUF(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	checkRoundTrip(t, dir, []string{"F32", "F16", "BF16", "Q8_0", "Q4_0"}, texts)
}

// A synthetic model with rows of 256 (byte-level BPE vocabulary, untied head, GQA) covers the
// K-quants and the gpt2 tokenizer.
func TestSynthThroughGGUF(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Seed: 3, DType: "F32", Preset: synth.Preset{Name: "k", Vocab: 384, Hidden: 256,
		Intermediate: 256, Layers: 2, Heads: 4, KVHeads: 2, MaxPos: 128}})
	require.NoError(t, err)
	checkRoundTrip(t, dir, []string{"F16", "Q8_0", "Q4_K", "Q6_K"}, texts)
}

func TestOpenRefusesWhatItCannotLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(arch string, typ parser.GGMLType) string {
		var w gguf.Writer
		w.String("general.architecture", arch)
		path := filepath.Join(dir, arch+typ.String()+".gguf")
		require.NoError(t, w.WriteFile(path))
		return path
	}
	_, err := gguf.Open(write("gemma3", parser.GGMLTypeF32))
	require.ErrorContains(t, err, `general.architecture "gemma3" is not supported`)
	_, err = gguf.Open(write("llama", parser.GGMLTypeF32))
	require.ErrorContains(t, err, "vocab_size")
	_, err = gguf.Open(filepath.Join(dir, "missing.gguf"))
	require.Error(t, err)
	var w gguf.Writer
	require.ErrorContains(t, w.Tensor("x", parser.GGMLTypeQ4_K, []int{2, 64}, nil), "not whole blocks")
}

// An embedding larger than its tokenizer (a padded vocabulary) is exported with "[PAD<id>]"
// tokens of type UNUSED up to vocab_size, as convert_hf_to_gguf.py pads it, so that llama.cpp,
// which refuses a vocabulary shorter than the embedding, loads the file.
func TestExportPadsTheVocabulary(t *testing.T) {
	dir := t.TempDir()
	const vocab = 4000
	_, err := synth.Write(dir, synth.Options{Seed: 5, DType: "F32", Vocab: vocab, Preset: synth.Presets["tiny"]})
	require.NoError(t, err)
	tk, err := tokenizer.Load(dir)
	require.NoError(t, err)
	n := tk.VocabSize()
	require.Less(t, n, vocab, "the synthetic tokenizer is smaller than the embedding")
	path := filepath.Join(t.TempDir(), "m.gguf")
	_, err = gguf.WriteModel(dir, path, parser.GGMLTypeF16)
	require.NoError(t, err)
	f, err := gguf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	toks, ok := f.Meta.Header.MetadataKV.Get("tokenizer.ggml.tokens")
	require.True(t, ok)
	types, ok := f.Meta.Header.MetadataKV.Get("tokenizer.ggml.token_type")
	require.True(t, ok)
	names, kinds := toks.ValueArray().ValuesString(), types.ValueArray().ValuesInt32()
	require.Len(t, names, vocab)
	require.Len(t, kinds, vocab)
	require.Equal(t, fmt.Sprintf("[PAD%d]", n), names[n])
	require.Equal(t, "[PAD3999]", names[vocab-1])
	require.Equal(t, int32(tokenizer.GGUFUnused), kinds[vocab-1])
	require.NotEqual(t, int32(tokenizer.GGUFUnused), kinds[n-1], "the tokenizer's own tokens keep their types")
}

// A Llama 3.1-style rope_scaling (rope_type llama3) is exported as convert_hf_to_gguf.py writes
// it, a rope_freqs.weight of per-dimension frequency divisors and no scaling keys, and loads back
// to the folder's logits. The original context of 64 puts stories260K's four frequencies (head_dim
// 8) in all three of llama3's bands, so the factors change the logits; a GGUF without them is far off.
func TestLlama3RopeThroughGGUF(t *testing.T) {
	src := testdata.Path(t, "stories260K")
	dir := t.TempDir()
	_, err := llama2c.Convert(filepath.Join(src, "stories260K.bin"), filepath.Join(src, "tok512.bin"), dir)
	require.NoError(t, err)
	plain := logitsOf(t, dir, storyIDs(t, dir))
	setLlama3Rope(t, dir)
	ids := storyIDs(t, dir)
	want := logitsOf(t, dir, ids)
	require.Greater(t, maxDiff(plain, want), 1e-2, "the llama3 scaling changes the logits")

	path := filepath.Join(t.TempDir(), "m.gguf")
	_, err = gguf.WriteModel(dir, path, parser.GGMLTypeF32)
	require.NoError(t, err)
	f, err := gguf.Open(path)
	require.NoError(t, err)
	// The factors llama.cpp's converter computes (float32 arithmetic) for theta 10000, head_dim 8,
	// factor 8, low 1, high 4, original context 64: wavelengths 2π, 20π, 200π and 2000π.
	s := (64/(20*math.Pi) - 1) / 3
	require.InDeltaSlice(t, []float64{1, 1 / ((1-s)/8 + s), 8, 8}, f.RopeFreqFactors(), 1e-6)
	_, ok := f.Meta.Header.MetadataKV.Get("llama.rope.scaling.type")
	require.False(t, ok, "llama3 scaling is rope_freqs alone, as llama.cpp's converter writes it")
	require.NoError(t, f.Close())
	got := logitsOf(t, path, ids)
	require.Less(t, maxDiff(want, got), 1e-4, "GGUF with rope_freqs against the folder with rope_scaling llama3")

	// Refused: factors of the wrong length, and non-positive ones.
	for _, bad := range []struct {
		v    []float32
		want string
	}{{[]float32{1, 2}, "want [4]"}, {[]float32{1, 0, 8, 8}, "factor 1 is 0"}} {
		var w gguf.Writer
		w.String("general.architecture", "llama")
		w.Uint32("llama.vocab_size", 8)
		w.Uint32("llama.embedding_length", 16)
		w.Uint32("llama.feed_forward_length", 16)
		w.Uint32("llama.block_count", 1)
		w.Uint32("llama.attention.head_count", 2)
		w.Float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
		v := bad.v
		require.NoError(t, w.Tensor("rope_freqs.weight", parser.GGMLTypeF32, []int{len(v)}, func() ([]float32, error) { return v, nil }))
		p := filepath.Join(t.TempDir(), "bad.gguf")
		require.NoError(t, w.WriteFile(p))
		_, err := gguf.Open(p)
		require.ErrorContains(t, err, bad.want)
	}
}

func storyIDs(t *testing.T, dir string) []int32 {
	tk, err := tokenizer.Load(dir)
	require.NoError(t, err)
	e, err := tk.Encode(texts[0]+" "+texts[2], true)
	require.NoError(t, err)
	ids := make([]int32, len(e))
	for i, id := range e {
		ids[i] = int32(id)
	}
	return ids
}

// setLlama3Rope gives dir's config.json Llama 3.1's rope_scaling with a short original context.
func setLlama3Rope(t *testing.T, dir string) {
	p := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	var c map[string]any
	require.NoError(t, json.Unmarshal(raw, &c))
	c["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
	raw, err = json.Marshal(c)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, raw, 0o644))
}

// A model split as llama-gguf-split splits it (here into 3 shards, the first with all the
// metadata) loads from its first shard to the logits of the single file, tensors read from every
// shard. A missing shard, or a shard other than the first, is refused by name.
func TestSplitGGUF(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Seed: 7, DType: "F32", Preset: synth.Preset{Name: "s", Vocab: 384, Hidden: 64,
		Intermediate: 96, Layers: 2, Heads: 4, KVHeads: 2, MaxPos: 128}})
	require.NoError(t, err)
	tmp := t.TempDir()
	one := filepath.Join(tmp, "one.gguf")
	_, err = gguf.WriteModel(dir, one, parser.GGMLTypeQ8_0)
	require.NoError(t, err)
	res, err := gguf.WriteModelSplit(dir, filepath.Join(tmp, "m.gguf"), parser.GGMLTypeQ8_0, 3)
	require.NoError(t, err)
	require.Equal(t, gguf.ShardPaths(filepath.Join(tmp, "m.gguf"), 3), res.Shards)
	require.Equal(t, filepath.Join(tmp, "m-00001-of-00003.gguf"), res.Out)

	// The shards hold what gguf-split writes: the metadata in the first, split.* keys in each.
	total := 0
	for i, p := range res.Shards {
		raw, err := os.ReadFile(p)
		require.NoError(t, err)
		n := int(binary.LittleEndian.Uint64(raw[8:]))
		require.Positive(t, n, "shard %d holds tensors", i)
		total += n
		kvs := binary.LittleEndian.Uint64(raw[16:])
		if i == 0 {
			require.Greater(t, kvs, uint64(20), "the first shard has all the metadata")
		} else {
			require.Equal(t, uint64(3), kvs, "split.no, split.count, split.tensors.count")
		}
	}
	f, err := gguf.Open(res.Out)
	require.NoError(t, err)
	require.Len(t, f.Meta.TensorInfos, total)
	c, _ := f.Meta.Header.MetadataKV.Get("split.count")
	require.Equal(t, parser.GGUFMetadataValueTypeUint16, c.ValueType)
	require.NoError(t, f.Close())

	ids := storyIDs(t, dir)
	want := logitsOf(t, one, ids)
	got := logitsOf(t, res.Out, ids)
	require.Equal(t, want, got, "the split model's logits are the single file's")
	a, err := tokenizer.Load(one)
	require.NoError(t, err)
	b, err := tokenizer.Load(res.Out)
	require.NoError(t, err)
	ea, err := a.Encode(texts[1], true)
	require.NoError(t, err)
	eb, err := b.Encode(texts[1], true)
	require.NoError(t, err)
	require.Equal(t, ea, eb, "the tokenizer from the first shard")

	_, err = gguf.Open(res.Shards[1])
	require.ErrorContains(t, err, "not the first shard")
	require.NoError(t, os.Remove(res.Shards[2]))
	_, err = gguf.Open(res.Out)
	require.ErrorContains(t, err, "m-00003-of-00003.gguf")
}
