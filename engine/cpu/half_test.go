package cpu_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
)

// 16-bit tensors read back widened exactly and take f32 writes rounded to nearest even (as a merge
// into a 16-bit weight stores it).
func TestHalfTensorFloat32(t *testing.T) {
	b := cpu.New()
	for _, dt := range []engine.DType{engine.F16, engine.BF16} {
		x, err := engine.NewTensor(b, dt, engine.Shape{2, 3})
		require.NoError(t, err)
		in := []float32{1, -2.5, 0.1, 65504, 3e-5, 1.0 / 3}
		require.NoError(t, x.SetFloat32(in))
		got, err := x.Float32()
		require.NoError(t, err)
		for i, v := range in {
			require.InEpsilon(t, v, got[i], map[engine.DType]float64{engine.F16: 1e-3, engine.BF16: 8e-3}[dt], "%s [%d]", dt, i)
		}
		require.Equal(t, float32(1), got[0])
		require.Equal(t, float32(-2.5), got[1])
		x.Release()
	}
	x, err := engine.NewTensor(b, engine.I32, engine.Shape{2})
	require.NoError(t, err)
	_, err = x.Float32()
	require.Error(t, err)
}
