package checkpoint

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// handMade builds a safetensors file byte by byte, independently of the writer under test.
func handMade(header string, data []byte) []byte {
	for len(header)%8 != 0 {
		header += " "
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestReadHandMadeFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.safetensors")
	data := f32Bytes([]float32{1.5, -2})
	data = append(data, 0x00, 0x3C, 0x00, 0xC0) // F16 1, -2
	data = append(data, 0x80, 0x3F, 0x20, 0xC0) // BF16 1, -2.5
	data = append(data, 7)                      // U8
	hdr := `{"__metadata__":{"format":"pt"},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"b":{"dtype":"F16","shape":[2,1],"data_offsets":[8,12]},` +
		`"c":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]},` +
		`"d":{"dtype":"U8","shape":[],"data_offsets":[16,17]}}`
	require.NoError(t, os.WriteFile(p, handMade(hdr, data), 0o644))
	f, err := OpenSafetensors(p)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, map[string]string{"format": "pt"}, f.Metadata)
	require.Equal(t, []string{"a", "b", "c", "d"}, f.Names())
	want := map[string][]float32{"a": {1.5, -2}, "b": {1, -2}, "c": {1, -2.5}}
	for name, w := range want {
		tt, ok := f.Tensor(name)
		require.True(t, ok)
		v, err := ToFloat32(tt)
		require.NoError(t, err)
		require.Equal(t, w, v, name)
	}
	d, _ := f.Tensor("d")
	require.Equal(t, Tensor{DType: "U8", Shape: []int{}, Data: []byte{7}}, d)
	_, err = ToFloat32(d)
	require.ErrorContains(t, err, "unsupported dtype U8")
	require.NoError(t, f.Close())
	require.NoError(t, f.Close(), "closing twice is harmless")
}

func TestWriteReadRoundTrip(t *testing.T) {
	m := buildTiny(1)
	p := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, WriteSafetensors(p, m.tensors, map[string]string{"format": "pt"}))
	f, err := OpenSafetensors(p)
	require.NoError(t, err)
	defer f.Close()
	require.Len(t, f.Names(), len(m.tensors))
	for name, want := range m.tensors {
		got, ok := f.Tensor(name)
		require.True(t, ok, name)
		require.Equal(t, want, got, name)
		v, err := ToFloat32(got)
		require.NoError(t, err)
		require.Equal(t, m.values[name], v, name)
	}
	// The header is 8-byte aligned, as safetensors requires.
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Zero(t, binary.LittleEndian.Uint64(b)%8)
}

func TestWriteProducerErrorLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	boom := errors.New("boom")
	err := writeSafetensors(p, map[string]lazyTensor{
		"a": {Tensor: Tensor{DType: "F32", Shape: []int{4}}, produce: func() ([]byte, error) { return nil, boom }},
		"b": {Tensor: Tensor{DType: "U8", Shape: []int{2}, Data: []byte{1, 2}}},
	}, nil)
	require.ErrorIs(t, err, boom)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)

	err = WriteSafetensors(p, map[string]Tensor{"a": {DType: "F32", Shape: []int{3}, Data: make([]byte, 8)}}, nil)
	require.ErrorContains(t, err, "tensor a: shape [3] of F32 needs 12 bytes, have 8")
	err = WriteSafetensors(p, map[string]Tensor{"a": {DType: "Q4", Shape: []int{3}}}, nil)
	require.ErrorContains(t, err, "tensor a")
}

func TestOpenSafetensorsErrors(t *testing.T) {
	dir := t.TempDir()
	good := handMade(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, f32Bytes([]float32{1, 2}))
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"short", []byte{1, 2, 3}, "too short"},
		{"header past end", binary.LittleEndian.AppendUint64(nil, 1000), "corrupt header: header length 1000 exceeds"},
		{"garbage header", handMade(`{"a": nope}`, nil), "corrupt header"},
		{"truncated", good[:len(good)-3], "truncated: the header describes 8 bytes of tensor data, the file holds 5"},
		{"trailing bytes", append(append([]byte(nil), good...), 1, 2), "2 bytes after the last tensor"},
		{"unsupported dtype", handMade(`{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`, []byte{1, 2}),
			`tensor a has unsupported dtype "F8_E4M3"`},
		{"size mismatch", handMade(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)),
			"shape [3] of F32 needs 12 bytes, data_offsets give 8"},
		{"overlap", handMade(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}`, make([]byte, 3)),
			"corrupt safetensors file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".safetensors")
			require.NoError(t, os.WriteFile(p, c.data, 0o644))
			_, err := OpenSafetensors(p)
			require.ErrorContains(t, err, p)
			require.ErrorContains(t, err, c.want)
		})
	}
	_, err := OpenSafetensors(filepath.Join(dir, "missing.safetensors"))
	require.ErrorContains(t, err, "missing.safetensors")
}

func TestToFloat32Errors(t *testing.T) {
	_, err := ToFloat32(Tensor{DType: "F16", Shape: []int{3}, Data: make([]byte, 4)})
	require.ErrorContains(t, err, "needs 6 bytes, have 4")
	_, err = ToFloat32(Tensor{DType: "I64", Shape: []int{1}, Data: make([]byte, 8)})
	require.ErrorContains(t, err, "unsupported dtype I64")
	require.Equal(t, Tensor{DType: "F32", Shape: []int{2}, Data: []byte{0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0}},
		FromFloat32([]float32{1, -2}, []int{2}))
}
