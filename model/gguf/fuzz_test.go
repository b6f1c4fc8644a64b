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

// FuzzGGUF feeds arbitrary bytes to the GGUF model and tokenizer readers: every input is an error or
// a file whose tensors all read back; none panics or allocates beyond the file's own size. The seeds
// are a real export (a tiny synth model as F32 and Q8_0) and its truncations.
func FuzzGGUF(f *testing.F) {
	dir := f.TempDir()
	if _, err := synth.Write(dir, synth.Options{Preset: synth.Presets["tiny"], Seed: 5}); err != nil {
		f.Fatal(err)
	}
	for _, ty := range []string{"F32", "Q8_0"} {
		typ, err := gguf.ParseType(ty)
		if err != nil {
			f.Fatal(err)
		}
		path := filepath.Join(dir, ty+".gguf")
		if _, err := gguf.WriteModel(dir, path, typ); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(b[:min(len(b), 4096)])
	}
	path := filepath.Join(f.TempDir(), "fuzz.gguf")
	f.Fuzz(func(t *testing.T, data []byte) {
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
