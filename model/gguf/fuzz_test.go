package gguf_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/gguf"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/model/tokenizer"
)

// fuzzPresets are the smallest Llamas the exporter writes, per type (Q8_0 needs rows of 32): their
// GGUFs are about 30 KB, where the "tiny" preset's is 576 KB. The fuzzer's cost grows with its
// inputs' size, minimizing above all (each new input is cut down range by range, an execution
// each): with the tiny model's seeds it stalled for minutes at 0 execs/s.
var fuzzPresets = map[string]synth.Preset{
	"F32":  {Name: "fuzz", Vocab: 288, Hidden: 8, Intermediate: 8, Layers: 1, Heads: 2, KVHeads: 1, MaxPos: 64},
	"Q8_0": {Name: "fuzz", Vocab: 288, Hidden: 32, Intermediate: 32, Layers: 1, Heads: 2, KVHeads: 1, MaxPos: 64},
}

// writeFuzzSeed exports the fuzz preset of type ty to dir/ty.gguf.
func writeFuzzSeed(t testing.TB, dir, ty string) string {
	src := filepath.Join(dir, ty)
	if _, err := synth.Write(src, synth.Options{Preset: fuzzPresets[ty], Seed: 5}); err != nil {
		t.Fatal(err)
	}
	typ, err := gguf.ParseType(ty)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ty+".gguf")
	if _, err := gguf.WriteModel(src, path, typ); err != nil {
		t.Fatal(err)
	}
	return path
}

// FuzzGGUF feeds arbitrary bytes to the GGUF model and tokenizer readers: every input is an error or
// a file whose tensors all read back; none panics or allocates beyond the file's own size. The seeds
// are a real export (a small synth model as F32 and Q8_0) and its truncations.
func FuzzGGUF(f *testing.F) {
	dir := f.TempDir()
	for _, ty := range []string{"F32", "Q8_0"} {
		b, err := os.ReadFile(writeFuzzSeed(f, dir, ty))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(b[:min(len(b), 4096)])
	}
	path := filepath.Join(f.TempDir(), "fuzz.gguf")
	f.Fuzz(func(t *testing.T, data []byte) {
		// The seeds are under 40 KB (TestFuzzSeedsAreSmall); a larger input only makes each run,
		// and the minimisation of each new one, slow enough that a short -fuzztime runs out inside it.
		if len(data) > 64<<10 {
			return
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if g, err := gguf.Open(path); err == nil {
			g.Config()
			for _, n := range g.Names() {
				if _, _, err := g.Float32(n); err != nil {
					break
				}
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = tokenizer.LoadGGUF(path)
	})
}

// A tensor whose dimensions overflow a uint64 byte count (what fuzzing found first) is an error, not
// a panic inside gguf-parser-go.
func TestOverflowingTensorSizeIsAnError(t *testing.T) {
	dir := t.TempDir()
	_, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 5})
	require.NoError(t, err)
	typ, err := gguf.ParseType("F32")
	require.NoError(t, err)
	path := filepath.Join(dir, "m.gguf")
	_, err = gguf.WriteModel(dir, path, typ)
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	// The tensor info: name, then n_dims (u32) and the dims (u64 each).
	name := []byte("token_embd.weight")
	i := bytes.Index(b, name)
	require.Positive(t, i)
	dims := i + len(name) + 4
	binary.LittleEndian.PutUint64(b[dims+8:], 0xf7000000000000b0)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	_, err = gguf.Open(path)
	require.ErrorContains(t, err, "corrupt GGUF header")
	_, err = tokenizer.LoadGGUF(path)
	require.ErrorContains(t, err, "corrupt GGUF header")
}

// The fuzz seeds stay small (see fuzzPreset), and they load: the tensors and the tokenizer.
func TestFuzzSeedsAreSmall(t *testing.T) {
	dir := t.TempDir()
	for _, ty := range []string{"F32", "Q8_0"} {
		path := writeFuzzSeed(t, dir, ty)
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.Less(t, st.Size(), int64(40<<10), ty)
		g, err := gguf.Open(path)
		require.NoError(t, err)
		require.NotEmpty(t, g.Names())
		for _, n := range g.Names() {
			v, _, err := g.Float32(n)
			require.NoError(t, err, n)
			require.NotEmpty(t, v)
		}
		require.NoError(t, g.Close())
		tok, err := tokenizer.LoadGGUF(path)
		require.NoError(t, err)
		require.Positive(t, tok.VocabSize())
	}
}
