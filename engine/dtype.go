package engine

import (
	"fmt"
	"strings"
)

// DType is the element type of a tensor.
type DType uint8

// The element types. F32 is the arithmetic type; F16 and BF16 are storage types for frozen weights;
// U8 holds packed 4-bit quantized data; I32 holds token ids and positions; U32 is raw packed words.
// I8 names no tensor's type: it is a precision a 4-bit weight's products may take
// (QuantSpec.Compute), 8-bit integers.
const (
	F32 DType = iota
	F16
	BF16
	U8
	U32
	I32
	I8
)

var dtypeNames = [...]string{F32: "f32", F16: "f16", BF16: "bf16", U8: "u8", U32: "u32", I32: "i32", I8: "i8"}
var dtypeSizes = [...]int{F32: 4, F16: 2, BF16: 2, U8: 1, U32: 4, I32: 4, I8: 1}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if int(d) >= len(dtypeSizes) {
		return 0
	}
	return dtypeSizes[d]
}

func (d DType) String() string {
	if int(d) >= len(dtypeNames) {
		return fmt.Sprintf("dtype(%d)", d)
	}
	return dtypeNames[d]
}

// Shape lists a tensor's dimensions, outermost first (row-major).
type Shape []int

// Numel is the number of elements: the product of the dimensions (1 for a scalar shape).
func (s Shape) Numel() int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// Equal reports whether two shapes have the same dimensions.
func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

// Last is the innermost dimension (0 for a rank-0 shape).
func (s Shape) Last() int {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// Rows is the product of all but the innermost dimension: the row count of the shape viewed as a matrix.
func (s Shape) Rows() int {
	if len(s) == 0 {
		return 1
	}
	return Shape(s[:len(s)-1]).Numel()
}

// Clone returns a copy that does not alias s.
func (s Shape) Clone() Shape { return append(Shape(nil), s...) }

// With returns a copy of s with the innermost dimension replaced by last.
func (s Shape) With(last int) Shape {
	c := s.Clone()
	if len(c) == 0 {
		return Shape{last}
	}
	c[len(c)-1] = last
	return c
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (s Shape) valid() bool {
	for _, d := range s {
		if d <= 0 {
			return false
		}
	}
	return true
}

// Meta is what shape inference knows about a value: its shape and element type.
type Meta struct {
	Shape Shape
	DType DType
}

// Bytes is the storage size of the value.
func (m Meta) Bytes() int64 { return int64(m.Shape.Numel()) * int64(m.DType.Size()) }

func (m Meta) String() string { return m.DType.String() + m.Shape.String() }
