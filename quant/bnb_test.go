package quant

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

const wname = "model.layers.0.self_attn.q_proj.weight"

func TestPyFloatRepr(t *testing.T) {
	for f, want := range map[float64]string{
		1.5:                      "1.5",
		0:                        "0.0",
		-2.5:                     "-2.5",
		123:                      "123.0",
		1e-05:                    "1e-05",
		0.0001:                   "0.0001",
		1.2345678e-07:            "1.2345678e-07",
		1e16:                     "1e+16",
		1234567890123456:         "1234567890123456.0",
		float64(float32(0.1)):    "0.10000000149011612",
		float64(float32(0.0123)): "0.012299999594688416",
	} {
		require.Equal(t, want, pyFloatRepr(f), "repr(%v)", f)
	}
}

// TestQuantStateJSON pins the exact bytes of the packed quant_state: json.dumps formatting and
// bitsandbytes' key order.
func TestQuantStateJSON(t *testing.T) {
	// Two blocks with absmax 1 and 2: offset = mean = 1.5 exactly.
	data := make([]float32, 128)
	data[0], data[64] = 1, -2
	for i := 1; i < 64; i++ {
		data[i], data[64+i] = 0.25, 0.5
	}
	q, err := Quantize(data, []int{2, 64}, NF4, 64, true)
	require.NoError(t, err)
	q.DType = DTypeBFloat16
	m, err := q.ToBnb(wname)
	require.NoError(t, err)
	st := m[wname+".quant_state.bitsandbytes__nf4"]
	require.Equal(t, "U8", st.DType)
	require.Equal(t, `{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2, 64], `+
		`"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 1.5}`, string(st.Data))
	require.Equal(t, []int{len(st.Data)}, st.Shape)

	q, err = Quantize(data, []int{128}, FP4, 128, false)
	require.NoError(t, err)
	m, err = q.ToBnb("w")
	require.NoError(t, err)
	require.Equal(t, `{"quant_type": "fp4", "blocksize": 128, "dtype": "float32", "shape": [128]}`,
		string(m["w.quant_state.bitsandbytes__fp4"].Data))
}

func TestToBnbLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	data := randNormal(r, 24*41, 0.05) // 984 elements: 16 blocks, the last partial
	q, err := Quantize(data, []int{24, 41}, NF4, 64, true)
	require.NoError(t, err)
	m, err := q.ToBnb(wname)
	require.NoError(t, err)
	require.Len(t, m, 6)
	for _, k := range BnbKeys(wname, NF4, true) {
		require.Contains(t, m, k)
	}
	require.Equal(t, RawTensor{DType: "U8", Shape: []int{492, 1}, Data: q.Packed}, m[wname])
	require.Equal(t, "U8", m[wname+".absmax"].DType)
	require.Equal(t, []int{16}, m[wname+".absmax"].Shape)
	require.Equal(t, "F32", m[wname+".nested_absmax"].DType)
	require.Equal(t, []int{1}, m[wname+".nested_absmax"].Shape)
	require.Equal(t, []int{256}, m[wname+".nested_quant_map"].Shape)
	qm := m[wname+".quant_map"]
	require.Equal(t, []int{16}, qm.Shape)
	require.Equal(t, math.Float32bits(NF4Code[1]), binary.LittleEndian.Uint32(qm.Data[4:]))

	q, err = Quantize(data, []int{24, 41}, FP4, 64, false)
	require.NoError(t, err)
	m, err = q.ToBnb(wname)
	require.NoError(t, err)
	require.Len(t, m, 4)
	require.Equal(t, "F32", m[wname+".absmax"].DType)
	require.Equal(t, []int{16}, m[wname+".absmax"].Shape)
	require.Len(t, m[wname+".absmax"].Data, 64)
	require.Contains(t, m, wname+".quant_state.bitsandbytes__fp4")

	w, ok := IsBnbQuantState(wname + ".quant_state.bitsandbytes__fp4")
	require.True(t, ok)
	require.Equal(t, wname, w)
	_, ok = IsBnbQuantState(wname + ".absmax")
	require.False(t, ok)
}

func TestBnbRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, typ := range []Type{NF4, FP4} {
		for _, dq := range []bool{false, true} {
			for _, shape := range [][]int{{24, 40}, {7, 65 * 3}, {1001}} {
				n := 1
				for _, d := range shape {
					n *= d
				}
				q, err := Quantize(randNormal(r, n, 0.1), shape, typ, 64, dq)
				require.NoError(t, err)
				q.DType = DTypeFloat16
				m, err := q.ToBnb(wname)
				require.NoError(t, err)
				m["unrelated.weight"] = RawTensor{DType: "F16", Shape: []int{1}, Data: []byte{0, 0}}
				back, err := FromBnb(wname, m)
				require.NoError(t, err)
				require.Equal(t, q, back)
				a, err := q.Dequantize()
				require.NoError(t, err)
				b, err := back.Dequantize()
				require.NoError(t, err)
				require.Equal(t, a, b)
			}
		}
	}
}

// bnbFixture returns freshly built tensors for a double-quantized and a plain NF4 weight.
func bnbFixture(t *testing.T, dq bool) map[string]RawTensor {
	t.Helper()
	q, err := Quantize(randNormal(rand.New(rand.NewPCG(15, 16)), 1000, 0.1), []int{10, 100}, NF4, 64, dq)
	require.NoError(t, err)
	m, err := q.ToBnb(wname)
	require.NoError(t, err)
	// Deep-copy so that a test may corrupt bytes in place.
	out := map[string]RawTensor{}
	for k, v := range m {
		out[k] = RawTensor{DType: v.DType, Shape: append([]int(nil), v.Shape...), Data: append([]byte(nil), v.Data...)}
	}
	return out
}

func TestFromBnbRejects(t *testing.T) {
	nan := math.Float32bits(float32(math.NaN()))
	state := wname + ".quant_state.bitsandbytes__nf4"
	cases := []struct {
		name   string
		dq     bool
		mutate func(m map[string]RawTensor)
		want   string
	}{
		{"missing absmax", false, func(m map[string]RawTensor) { delete(m, wname+".absmax") },
			"missing tensor " + wname + ".absmax"},
		{"missing weight", true, func(m map[string]RawTensor) { delete(m, wname) },
			"missing tensor " + wname},
		{"missing quant_state", false, func(m map[string]RawTensor) { delete(m, state) },
			"missing tensor " + wname + ".quant_state.bitsandbytes__*"},
		{"missing nested quant map", true, func(m map[string]RawTensor) { delete(m, wname+".nested_quant_map") },
			"missing tensor " + wname + ".nested_quant_map"},
		{"nested absmax without offset", true, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [10, 100]}`)
		}, "nested_offset and tensor " + wname + ".nested_absmax must both be present"},
		{"truncated packed", false, func(m map[string]RawTensor) {
			w := m[wname]
			w.Data = w.Data[:len(w.Data)-1]
			m[wname] = w
		}, wname + ": 499 bytes of data, shape [500 1] of U8 needs 500"},
		{"wrong packed shape", false, func(m map[string]RawTensor) {
			w := m[wname]
			w.Shape = []int{250, 2}
			m[wname] = w
		}, wname + ": shape [250 2], want [500 1]"},
		{"wrong absmax dtype", true, func(m map[string]RawTensor) {
			a := m[wname+".absmax"]
			a.DType = "F32"
			m[wname+".absmax"] = a
		}, wname + ".absmax: dtype F32, want U8"},
		{"NaN absmax", false, func(m map[string]RawTensor) {
			binary.LittleEndian.PutUint32(m[wname+".absmax"].Data[12:], nan)
		}, wname + ".absmax: value 3 is NaN"},
		{"NaN nested absmax", true, func(m map[string]RawTensor) {
			binary.LittleEndian.PutUint32(m[wname+".nested_absmax"].Data, nan)
		}, wname + ".nested_absmax: value 0 is NaN"},
		{"wrong quant map", false, func(m map[string]RawTensor) {
			binary.LittleEndian.PutUint32(m[wname+".quant_map"].Data[4:], math.Float32bits(0.5))
		}, wname + ".quant_map: value 1 is 0.5"},
		{"bad JSON", false, func(m map[string]RawTensor) { m[state] = u8JSON(`{"quant_type": "nf4", `) },
			state + ": bad quant_state JSON"},
		{"unknown key", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [10, 100], "zzz": 1}`)
		}, state + `: bad quant_state JSON: json: unknown field "zzz"`},
		{"unknown quant_type", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "int4", "blocksize": 64, "dtype": "float32", "shape": [10, 100]}`)
		}, state + `: unknown 4-bit quant type "int4"`},
		{"quant_type contradicts key", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [10, 100]}`)
		}, state + `: quant_type "fp4" contradicts the key`},
		{"missing blocksize", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "dtype": "float32", "shape": [10, 100]}`)
		}, state + ": quant_state lacks blocksize"},
		{"bad blocksize", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 48, "dtype": "float32", "shape": [10, 100]}`)
		}, state + ": invalid blocksize 48"},
		{"bad dtype", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [10, 100]}`)
		}, state + `: dtype "int8" unsupported`},
		{"shape disagrees with data", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [10, 101]}`)
		}, wname + ": shape [500 1], want [505 1]"},
		{"negative shape", false, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [-10, 100]}`)
		}, "not positive"},
		{"state not U8", false, func(m map[string]RawTensor) {
			s := m[state]
			s.DType = "I8"
			m[state] = s
		}, state + ": dtype I8, want U8"},
		{"both types", false, func(m map[string]RawTensor) {
			m[wname+".quant_state.bitsandbytes__fp4"] = m[state]
		}, "both"},
		{"nested dtype", true, func(m map[string]RawTensor) {
			m[state] = u8JSON(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [10, 100], "nested_blocksize": 256, "nested_dtype": "float16", "nested_offset": 0.1}`)
		}, `nested_dtype "float16" unsupported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := bnbFixture(t, c.dq)
			_, err := FromBnb(wname, m) // the fixture itself is valid
			require.NoError(t, err)
			c.mutate(m)
			_, err = FromBnb(wname, m)
			require.ErrorContains(t, err, c.want)
		})
	}
}

func u8JSON(s string) RawTensor {
	return RawTensor{DType: "U8", Shape: []int{len(s)}, Data: []byte(s)}
}
