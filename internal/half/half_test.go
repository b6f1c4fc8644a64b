package half

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBF16RoundsToNearestEven(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1.0 exact
		{0x3f808000, 0x3f80}, // halfway, even stays
		{0x3f818000, 0x3f82}, // halfway, odd rounds up
		{0x3f808001, 0x3f81}, // above halfway
		{0xbf807fff, 0xbf80}, // below halfway, negative
		{0x7f7fffff, 0x7f80}, // max float rounds to +Inf
	} {
		require.Equal(t, c.want, BF16(math.Float32frombits(c.in)), "%08x", c.in)
	}
	require.True(t, math.IsNaN(float64(BF16ToFloat32(BF16(float32(math.NaN()))))))
	require.Equal(t, float32(-2.5), BF16ToFloat32(BF16(-2.5)))
}
