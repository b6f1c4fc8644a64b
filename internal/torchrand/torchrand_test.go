package torchrand

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// golden is testdata/torch_bernoulli.json, written by testdata/torch_bernoulli.py with torch
// on the CPU.
type golden struct {
	Torch     string
	Bernoulli []struct {
		Seed    uint64
		Shape   []int
		Density float64
		Mask    string
	}
	PEFT []struct {
		Seed            uint64
		InitLoraWeights bool `json:"init_lora_weights"`
		Modules         [][2]int
		Adapters, R     int
		Density         float64
		Masks           []string
	} `json:"peft"`
}

func readGolden(t *testing.T) golden {
	raw, err := os.ReadFile("testdata/torch_bernoulli.json")
	require.NoError(t, err)
	var g golden
	require.NoError(t, json.Unmarshal(raw, &g))
	require.NotEmpty(t, g.Bernoulli)
	require.NotEmpty(t, g.PEFT)
	return g
}

func bits(m []bool) string {
	var b strings.Builder
	for _, x := range m {
		if x {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

// The engine is the standard MT19937: its 10000th output from the reference seed 5489 is
// 4123659995 (C++ [rand.predef]).
func TestMT19937Standard(t *testing.T) {
	g := New(5489)
	g.Skip(9999)
	require.Equal(t, uint32(4123659995), g.Uint32())
}

// torch.bernoulli(torch.full(shape, density)) right after torch.manual_seed(seed), seeds above
// 2³² included.
func TestBernoulliMatchesTorch(t *testing.T) {
	g := readGolden(t)
	for _, c := range g.Bernoulli {
		n := c.Shape[0] * c.Shape[1]
		got := New(c.Seed).BernoulliMask(n, float32(c.Density))
		require.Equal(t, c.Mask, bits(got), "seed %d shape %v density %v", c.Seed, c.Shape, c.Density)
	}
}

// The draws PEFT's add_weighted_adapter makes: the new adapter's initialization (nn.Linear's
// kaiming init of A and B, and A's again with init_lora_weights=True) consumes one output per
// element before the masks, which are drawn module by module, every adapter's A, then every B.
func TestPEFTStreamMatchesTorch(t *testing.T) {
	g := readGolden(t)
	for _, c := range g.PEFT {
		rng := New(c.Seed)
		for _, m := range c.Modules {
			out, in := m[0], m[1]
			rng.Skip(c.R*in + out*c.R)
			if c.InitLoraWeights {
				rng.Skip(c.R * in)
			}
		}
		k := 0
		for _, m := range c.Modules {
			out, in := m[0], m[1]
			for _, n := range []int{c.R * in, out * c.R} {
				for range c.Adapters {
					require.Equal(t, c.Masks[k], bits(rng.BernoulliMask(n, float32(c.Density))), "seed %d mask %d", c.Seed, k)
					k++
				}
			}
		}
		require.Equal(t, len(c.Masks), k)
	}
}

// Float32 is exact: k/2²⁴ for the output's low 24 bits, in [0, 1), and about uniform.
func TestFloat32(t *testing.T) {
	a, b := New(3), New(3)
	var sum float64
	const n = 100000
	for range n {
		u := a.Float32()
		require.Equal(t, float32(b.Uint32()&0xffffff)/16777216, u)
		require.GreaterOrEqual(t, u, float32(0))
		require.Less(t, u, float32(1))
		sum += float64(u)
	}
	require.InDelta(t, 0.5, sum/n, 0.005)
}
