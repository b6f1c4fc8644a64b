package checkpoint

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSafetensors feeds mutated safetensors files to the header parser and then reads every
// tensor it accepts: bad input must give an error naming the file, never a panic, and an accepted
// tensor must hold exactly the bytes its shape and dtype need.
func FuzzSafetensors(f *testing.F) {
	dir := f.TempDir()
	for i, ts := range []map[string]Tensor{
		{"a": FromFloat32([]float32{1, 2, 3, 4, 5, 6}, []int{2, 3}), "b": FromFloat32([]float32{7}, []int{1})},
		{"h": {DType: "F16", Shape: []int{3}, Data: []byte{0, 60, 0, 64, 0, 0xbc}}, "q": {DType: "U8", Shape: []int{2, 2}, Data: []byte{1, 2, 3, 4}}},
		{"z": {DType: "BF16", Shape: []int{0}, Data: nil}, "s": FromFloat32([]float32{3}, []int{})},
	} {
		p := filepath.Join(dir, "seed.safetensors")
		if err := WriteSafetensors(p, ts, map[string]string{"format": "pt"}); err != nil {
			f.Fatal(err)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		if i == 0 {
			f.Add(raw[:len(raw)-3]) // truncated data
			f.Add(raw[:12])         // truncated header
			bad := append([]byte(nil), raw...)
			binary.LittleEndian.PutUint64(bad, 1<<62) // a header length beyond the file
			f.Add(bad)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf := &File{Path: "fuzz.safetensors", mem: data}
		if err := sf.parse(); err != nil {
			return
		}
		for _, name := range sf.Names() {
			tt, ok := sf.Tensor(name)
			if !ok {
				t.Fatalf("listed tensor %q is missing", name)
			}
			if int64(len(tt.Data)) != tt.Numel()*dtypeSize[tt.DType] {
				t.Fatalf("tensor %q: %d bytes for shape %v of %s", name, len(tt.Data), tt.Shape, tt.DType)
			}
			if IsFloat(tt.DType) {
				v, err := ToFloat32(tt)
				if err != nil {
					t.Fatalf("tensor %q: %v", name, err)
				}
				if int64(len(v)) != tt.Numel() {
					t.Fatalf("tensor %q: %d values for %d elements", name, len(v), tt.Numel())
				}
			}
		}
	})
}
