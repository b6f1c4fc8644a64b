package quant

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// RawTensor is a tensor as a safetensors file stores it: a dtype spelled as safetensors spells
// it ("U8", "F32", ...), a shape, and the little-endian bytes. It keeps this package free of any
// file-format dependency.
type RawTensor struct {
	// DType is the safetensors dtype name: "U8" or "F32" here.
	DType string
	// Shape is the tensor's shape.
	Shape []int
	// Data is the row-major little-endian bytes.
	Data []byte
}

// Suffixes of the tensors bitsandbytes stores next to a 4-bit weight W (Linear4bit's state dict:
// QuantState.as_dict(packed=True)); the packed quant_state key ends with the quant type.
const (
	SuffixAbsmax         = ".absmax"
	SuffixQuantMap       = ".quant_map"
	SuffixNestedAbsmax   = ".nested_absmax"
	SuffixNestedQuantMap = ".nested_quant_map"
	SuffixQuantState     = ".quant_state.bitsandbytes__"
)

// BnbKeys returns the names of the tensors ToBnb writes for the weight name with the given type
// and layout, the weight itself first.
func BnbKeys(name string, typ Type, doubleQuant bool) []string {
	keys := []string{name, name + SuffixAbsmax, name + SuffixQuantMap}
	if doubleQuant {
		keys = append(keys, name+SuffixNestedAbsmax, name+SuffixNestedQuantMap)
	}
	return append(keys, name+SuffixQuantState+typ.String())
}

// quantState is the JSON bitsandbytes packs into the quant_state tensor. Pointers tell a missing
// key from a zero value.
type quantState struct {
	QuantType       *string  `json:"quant_type"`
	Blocksize       *int     `json:"blocksize"`
	DType           *string  `json:"dtype"`
	Shape           []int    `json:"shape"`
	NestedBlocksize *int     `json:"nested_blocksize"`
	NestedDType     *string  `json:"nested_dtype"`
	NestedOffset    *float64 `json:"nested_offset"`
}

// quantStateJSON writes the quant_state dict exactly as Python's json.dumps does: ", " and ": "
// separators, bitsandbytes' key order, floats in repr form.
func (t *Tensor4) quantStateJSON() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"quant_type": %q, "blocksize": %d, "dtype": %q, "shape": [`, t.Type.String(), t.Blocksize, t.DType)
	for i, d := range t.Shape {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(d))
	}
	b.WriteString("]")
	if t.DoubleQuant() {
		fmt.Fprintf(&b, `, "nested_blocksize": %d, "nested_dtype": "float32", "nested_offset": %s`,
			t.NestedBlocksize, pyFloatRepr(float64(t.Offset)))
	}
	b.WriteString("}")
	return []byte(b.String())
}

// pyFloatRepr formats f as Python's repr(float) does: the shortest digits that round-trip, in
// fixed notation with at least one decimal when the exponent is in [-4, 16), else in exponent
// notation with a sign and at least two exponent digits ("1e-05", "1.5e+16").
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e // Go's shortest 'e' form already matches: "1e-05", "1.2345e+20".
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// ToBnb returns the tensors transformers and bitsandbytes store for a 4-bit Linear weight named
// name (the full weight name, e.g. "model.layers.0.self_attn.q_proj.weight"):
//
//	name                                   U8  [(numel+1)/2, 1]  packed codes
//	name.absmax                            F32 [nblocks]         (U8 with double quant)
//	name.quant_map                         F32 [16]
//	name.nested_absmax                     F32 [ceil(nblocks/256)]  double quant only
//	name.nested_quant_map                  F32 [256]                double quant only
//	name.quant_state.bitsandbytes__nf4     U8  [len]  json.dumps of quant_type, blocksize, dtype,
//	                                       shape (+ nested_blocksize, nested_dtype, nested_offset)
//
// The returned tensors share no memory with t except Packed and QAbsmax.
func (t *Tensor4) ToBnb(name string) (map[string]RawTensor, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	out := map[string]RawTensor{
		name:                  {DType: "U8", Shape: []int{len(t.Packed), 1}, Data: t.Packed},
		name + SuffixQuantMap: f32Tensor(t.Code[:]),
	}
	if t.DoubleQuant() {
		out[name+SuffixAbsmax] = RawTensor{DType: "U8", Shape: []int{len(t.QAbsmax)}, Data: t.QAbsmax}
		out[name+SuffixNestedAbsmax] = f32Tensor(t.NestedAbsmax)
		out[name+SuffixNestedQuantMap] = f32Tensor(t.NestedCode[:])
	} else {
		out[name+SuffixAbsmax] = f32Tensor(t.Absmax)
	}
	js := t.quantStateJSON()
	out[name+SuffixQuantState+t.Type.String()] = RawTensor{DType: "U8", Shape: []int{len(js)}, Data: js}
	return out, nil
}

func f32Tensor(v []float32) RawTensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return RawTensor{DType: "F32", Shape: []int{len(v)}, Data: b}
}

// IsBnbQuantState reports whether key names a bitsandbytes quant_state tensor, and if so returns
// the weight name it belongs to.
func IsBnbQuantState(key string) (weight string, ok bool) {
	for _, typ := range []Type{NF4, FP4} {
		if w, found := strings.CutSuffix(key, SuffixQuantState+typ.String()); found && w != "" {
			return w, true
		}
	}
	return "", false
}

// FromBnb reads the 4-bit weight name from the tensors bitsandbytes stores for it (see ToBnb),
// checking every key, dtype, shape and byte count, the quant_state JSON and the values, and
// returns an error that names the offending tensor. Other entries of tensors are ignored. The
// returned tensor may share Packed and QAbsmax with the input.
func FromBnb(name string, tensors map[string]RawTensor) (*Tensor4, error) {
	// The quant type is spelled in the key of the quant_state tensor.
	var typ Type
	var stateKey string
	for _, cand := range []Type{NF4, FP4} {
		if _, ok := tensors[name+SuffixQuantState+cand.String()]; ok {
			if stateKey != "" {
				return nil, fmt.Errorf("%s: both %s and %s present", name, stateKey, name+SuffixQuantState+cand.String())
			}
			typ, stateKey = cand, name+SuffixQuantState+cand.String()
		}
	}
	if stateKey == "" {
		return nil, fmt.Errorf("%s: missing tensor %s (nf4 or fp4)", name, name+SuffixQuantState+"*")
	}
	st, err := parseQuantState(stateKey, tensors[stateKey], typ)
	if err != nil {
		return nil, err
	}
	t := &Tensor4{Type: typ, Shape: st.Shape, DType: *st.DType, Blocksize: *st.Blocksize}
	n, err := numel(st.Shape)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stateKey, err)
	}
	if err := checkBlocksize(t.Blocksize); err != nil {
		return nil, fmt.Errorf("%s: %w", stateKey, err)
	}
	nb := ceilDiv(n, t.Blocksize)

	w, err := lookup(tensors, name, "U8", []int{(n + 1) / 2, 1})
	if err != nil {
		return nil, err
	}
	t.Packed = w.Data

	qm, err := lookup(tensors, name+SuffixQuantMap, "F32", []int{16})
	if err != nil {
		return nil, err
	}
	copy(t.Code[:], f32s(qm.Data))
	want := typ.Code()
	for i, c := range t.Code {
		if !finite(c) || math.Abs(float64(c-want[i])) > 1e-6 {
			return nil, fmt.Errorf("%s: value %d is %v, the %v code has %v", name+SuffixQuantMap, i, c, typ, want[i])
		}
	}

	_, hasNested := tensors[name+SuffixNestedAbsmax]
	if hasNested != (st.NestedOffset != nil) {
		return nil, fmt.Errorf("%s: nested_offset and tensor %s must both be present or both absent", stateKey, name+SuffixNestedAbsmax)
	}
	if !hasNested {
		if st.NestedBlocksize != nil || st.NestedDType != nil {
			return nil, fmt.Errorf("%s: nested_blocksize/nested_dtype without nested_offset", stateKey)
		}
		am, err := lookup(tensors, name+SuffixAbsmax, "F32", []int{nb})
		if err != nil {
			return nil, err
		}
		t.Absmax = f32s(am.Data)
		for i, a := range t.Absmax {
			if !finite(a) || a < 0 {
				return nil, fmt.Errorf("%s: value %d is %v", name+SuffixAbsmax, i, a)
			}
		}
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return t, nil
	}

	if st.NestedBlocksize == nil || st.NestedDType == nil {
		return nil, fmt.Errorf("%s: double quant needs nested_blocksize and nested_dtype", stateKey)
	}
	if *st.NestedDType != DTypeFloat32 {
		return nil, fmt.Errorf("%s: nested_dtype %q unsupported (want float32)", stateKey, *st.NestedDType)
	}
	nbs := *st.NestedBlocksize
	if nbs <= 0 || nbs&(nbs-1) != 0 || nbs > MaxBlocksize {
		return nil, fmt.Errorf("%s: invalid nested_blocksize %d", stateKey, nbs)
	}
	off := float32(*st.NestedOffset)
	if !finite(off) {
		return nil, fmt.Errorf("%s: nested_offset %v is not finite", stateKey, *st.NestedOffset)
	}
	t.NestedBlocksize, t.Offset = nbs, off

	am, err := lookup(tensors, name+SuffixAbsmax, "U8", []int{nb})
	if err != nil {
		return nil, err
	}
	t.QAbsmax = am.Data
	na, err := lookup(tensors, name+SuffixNestedAbsmax, "F32", []int{ceilDiv(nb, nbs)})
	if err != nil {
		return nil, err
	}
	t.NestedAbsmax = f32s(na.Data)
	for i, a := range t.NestedAbsmax {
		if !finite(a) || a < 0 {
			return nil, fmt.Errorf("%s: value %d is %v", name+SuffixNestedAbsmax, i, a)
		}
	}
	nq, err := lookup(tensors, name+SuffixNestedQuantMap, "F32", []int{256})
	if err != nil {
		return nil, err
	}
	copy(t.NestedCode[:], f32s(nq.Data))
	for i, c := range t.NestedCode {
		if !finite(c) {
			return nil, fmt.Errorf("%s: value %d is %v", name+SuffixNestedQuantMap, i, c)
		}
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// parseQuantState decodes and checks the JSON bytes of a quant_state tensor.
func parseQuantState(key string, rt RawTensor, typ Type) (*quantState, error) {
	if rt.DType != "U8" {
		return nil, fmt.Errorf("%s: dtype %s, want U8", key, rt.DType)
	}
	if len(rt.Shape) != 1 || rt.Shape[0] != len(rt.Data) {
		return nil, fmt.Errorf("%s: shape %v does not match its %d bytes", key, rt.Shape, len(rt.Data))
	}
	dec := json.NewDecoder(bytes.NewReader(rt.Data))
	dec.DisallowUnknownFields()
	var st quantState
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: bad quant_state JSON: %w", key, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: bad quant_state JSON: data after the object", key)
	}
	switch {
	case st.QuantType == nil:
		return nil, fmt.Errorf("%s: quant_state lacks quant_type", key)
	case st.Blocksize == nil:
		return nil, fmt.Errorf("%s: quant_state lacks blocksize", key)
	case st.DType == nil:
		return nil, fmt.Errorf("%s: quant_state lacks dtype", key)
	case st.Shape == nil:
		return nil, fmt.Errorf("%s: quant_state lacks shape", key)
	}
	qt, err := ParseType(*st.QuantType)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if qt != typ {
		return nil, fmt.Errorf("%s: quant_type %q contradicts the key", key, *st.QuantType)
	}
	if !validDType(*st.DType) {
		return nil, fmt.Errorf("%s: dtype %q unsupported (want float32, float16 or bfloat16)", key, *st.DType)
	}
	return &st, nil
}

// lookup fetches a tensor and checks its dtype, shape and byte count.
func lookup(tensors map[string]RawTensor, key, dtype string, shape []int) (RawTensor, error) {
	rt, ok := tensors[key]
	if !ok {
		return rt, fmt.Errorf("missing tensor %s", key)
	}
	if rt.DType != dtype {
		return rt, fmt.Errorf("%s: dtype %s, want %s", key, rt.DType, dtype)
	}
	if !slices.Equal(rt.Shape, shape) {
		return rt, fmt.Errorf("%s: shape %v, want %v", key, rt.Shape, shape)
	}
	size := 1
	if dtype == "F32" {
		size = 4
	}
	n := size
	for _, d := range shape {
		n *= d
	}
	if len(rt.Data) != n {
		return rt, fmt.Errorf("%s: %d bytes of data, shape %v of %s needs %d (truncated?)", key, len(rt.Data), shape, dtype, n)
	}
	return rt, nil
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}
