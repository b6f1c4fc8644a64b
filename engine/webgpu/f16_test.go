package webgpu

import (
	"testing"

	"github.com/lathe-ml/lathe/engine/enginetest"
)

// The f16 matmul variant against its float64 reference (enginetest.VerifyF16MatMul).
func TestF16MatMulReference(t *testing.T) {
	b := openTest(t)
	if !b.Caps().ShaderF16 {
		t.Skip("no shader-f16") // TestConformanceF16 fails for it under LATHE_REQUIRE_GPU=1
	}
	if err := b.SetF16Arithmetic(true); err != nil {
		t.Fatal(err)
	}
	defer b.SetF16Arithmetic(false)
	if err := enginetest.VerifyF16MatMul(b); err != nil {
		t.Fatal(err)
	}
}
