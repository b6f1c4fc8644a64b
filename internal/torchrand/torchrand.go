// Package torchrand reproduces the draws of PyTorch's default CPU generator, so that lathe's
// random choices can match what the same seed gives in torch: torch.manual_seed(seed) seeds a
// 32-bit Mersenne Twister (ATen's mt19937, the standard MT19937 seeded with the seed's low 32
// bits), and a float32 draw takes 24 bits of one 32-bit output (ATen's uniform_real_distribution).
package torchrand

// MT19937 is ATen's CPU engine (at::mt19937) in the state torch.manual_seed leaves it.
type MT19937 struct {
	state [624]uint32
	next  int
}

// New returns the generator torch.manual_seed(seed) makes.
func New(seed uint64) *MT19937 {
	g := &MT19937{}
	g.state[0] = uint32(seed) // ATen keeps seed & 0xffffffff
	for i := 1; i < len(g.state); i++ {
		prev := g.state[i-1]
		g.state[i] = 1812433253*(prev^(prev>>30)) + uint32(i)
	}
	g.next = len(g.state)
	return g
}

// Uint32 is the engine's next output (CPUGeneratorImpl::random).
func (g *MT19937) Uint32() uint32 {
	const n, m = 624, 397
	if g.next >= n {
		for i := 0; i < n; i++ {
			y := g.state[i]&0x80000000 | g.state[(i+1)%n]&0x7fffffff
			v := g.state[(i+m)%n] ^ y>>1
			if y&1 != 0 {
				v ^= 0x9908b0df
			}
			g.state[i] = v
		}
		g.next = 0
	}
	y := g.state[g.next]
	g.next++
	y ^= y >> 11
	y ^= y << 7 & 0x9d2c5680
	y ^= y << 15 & 0xefc60000
	y ^= y >> 18
	return y
}

// Skip discards n outputs: what a float32 uniform_ (kaiming_uniform_ included) over n elements
// consumes on the CPU.
func (g *MT19937) Skip(n int) {
	for range n {
		g.Uint32()
	}
}

// Float32 is a float32 uniform draw in [0, 1): the low 24 bits of one output over 2²⁴, as
// at::uniform_real_distribution<float> makes it.
func (g *MT19937) Float32() float32 {
	return float32(g.Uint32()&(1<<24-1)) / (1 << 24)
}

// Bernoulli is one element of torch.bernoulli over a float32 tensor of probabilities p: 1 when
// a float32 uniform draw is below p (at::bernoulli_distribution<float>).
func (g *MT19937) Bernoulli(p float32) bool { return g.Float32() < p }

// BernoulliMask is torch.bernoulli(torch.full_like(t, p)) for a contiguous float32 t of n
// elements: the draws are made in memory order, one per element.
func (g *MT19937) BernoulliMask(n int, p float32) []bool {
	m := make([]bool, n)
	for i := range m {
		m[i] = g.Bernoulli(p)
	}
	return m
}
