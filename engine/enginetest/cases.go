package enginetest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/internal/half"
	"github.com/lathe-ml/lathe/quant"
)

// builder collects the leaves of a case.
type builder struct {
	g      *engine.Graph
	r      *rand.Rand
	leaves []Leaf
}

func (b *builder) f32(shape engine.Shape, scale float64) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.F32, shape)
	v := make([]float32, shape.Numel())
	for i := range v {
		v[i] = float32(b.r.NormFloat64() * scale)
	}
	b.leaves = append(b.leaves, Leaf{Node: n, F32: v})
	return n
}

// pos returns values in (lo, hi): gains and IA3 vectors that keep signs.
func (b *builder) pos(shape engine.Shape, lo, hi float64) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.F32, shape)
	v := make([]float32, shape.Numel())
	for i := range v {
		v[i] = float32(lo + (hi-lo)*b.r.Float64())
	}
	b.leaves = append(b.leaves, Leaf{Node: n, F32: v})
	return n
}

// vals adds an f32 vector of the given values (control vectors).
func (b *builder) vals(v ...float32) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.F32, engine.Shape{len(v)})
	b.leaves = append(b.leaves, Leaf{Node: n, F32: v})
	return n
}

func (b *builder) i32(v []int32) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), engine.I32, engine.Shape{len(v)})
	b.leaves = append(b.leaves, Leaf{Node: n, I32: v})
	return n
}

func (b *builder) ints(n, lo, hi int) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = int32(lo + b.r.IntN(hi-lo))
	}
	return v
}

// quant4 adds a random 4-bit weight [n, k] (packed bytes and positive absmax).
func (b *builder) quant4(n, k, blocksize int, typ quant.Type) (packed, absmax *engine.Node, q engine.QuantSpec) {
	numel := n * k
	raw := make([]byte, (numel+1)/2)
	for i := range raw {
		raw[i] = byte(b.r.IntN(256))
	}
	packed = b.g.Input(leafName(len(b.leaves)), engine.U8, engine.Shape{len(raw)})
	b.leaves = append(b.leaves, Leaf{Node: packed, U8: raw})
	absmax = b.pos(engine.Shape{(numel + blocksize - 1) / blocksize}, 0.05, 1)
	return packed, absmax, engine.QuantSpec{Type: typ, Blocksize: blocksize, N: n, K: k}
}

// half adds a frozen 16-bit (f16 or bf16) weight, normal with the given scale, rounded to the type.
func (b *builder) half(dt engine.DType, shape engine.Shape, scale float64) *engine.Node {
	n := b.g.Input(leafName(len(b.leaves)), dt, shape)
	raw := make([]byte, 2*shape.Numel())
	for i := 0; i < shape.Numel(); i++ {
		v := float32(b.r.NormFloat64() * scale)
		h := float16.Fromfloat32(v).Bits()
		if dt == engine.BF16 {
			h = half.BF16(v)
		}
		binary.LittleEndian.PutUint16(raw[2*i:], h)
	}
	b.leaves = append(b.leaves, Leaf{Node: n, U8: raw})
	return n
}

var halves = []engine.DType{engine.F16, engine.BF16}

// halfCases check the ops that read frozen 16-bit weights (MatMul16, Embedding16, LoRA and its
// backward over a 16-bit W) in both types, few rows (the GEMV) and many, forward and transposed.
func halfCases() []Case {
	const tol = 1e-4
	var cs []Case
	for _, dt := range halves {
		cs = append(cs,
			c("matmul16/gemv/"+dt.String(), tol, func(b *builder) []*engine.Node {
				return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{1, 131}, 1), b.half(dt, engine.Shape{77, 131}, 1), false, true)}
			}),
			c("matmul16/gemm/"+dt.String(), tol, func(b *builder) []*engine.Node {
				return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{3, 13, 53}, 1), b.half(dt, engine.Shape{29, 53}, 1), false, true)}
			}),
			c("matmul16/transposed/"+dt.String(), tol, func(b *builder) []*engine.Node {
				w := b.half(dt, engine.Shape{29, 53}, 1)
				return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{37, 29}, 1), w, false, false), b.g.MatMul(b.f32(engine.Shape{1, 29}, 1), w, false, false)}
			}),
			// Every 16-bit pattern (subnormals, infinities, NaNs included) widened exactly.
			c("embedding16/every_pattern/"+dt.String(), 0, func(b *builder) []*engine.Node {
				const dim = 64
				raw := make([]byte, 2<<16)
				for i := range 1 << 16 {
					binary.LittleEndian.PutUint16(raw[2*i:], uint16(i))
				}
				t := b.g.Input(leafName(len(b.leaves)), dt, engine.Shape{(1 << 16) / dim, dim})
				b.leaves = append(b.leaves, Leaf{Node: t, U8: raw})
				ids := make([]int32, (1<<16)/dim)
				for i := range ids {
					ids[i] = int32(len(ids) - 1 - i)
				}
				return []*engine.Node{b.g.Embedding(t, b.i32(ids))}
			}),
			c("embedding16/"+dt.String(), 0, func(b *builder) []*engine.Node {
				return []*engine.Node{b.g.Embedding(b.half(dt, engine.Shape{13, 37}, 1), b.i32([]int32{4, 0, 12, 4, 7}))}
			}),
			c("lora/"+dt.String(), tol, func(b *builder) []*engine.Node {
				return b.g.Apply(engine.LoRA{Scale: 1.5, Dropout: 0.2, Salt: 9}, b.f32(engine.Shape{11, 41}, 1), b.half(dt, engine.Shape{23, 41}, 0.5),
					b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.i32([]int32{4242}))[:2]
			}),
			// bfloat16 compute allowed (MatMul16.Compute, LoRA.Compute): the CPU takes it for a bf16 W
			// (forward: an even depth, any rows; backward: more than four rows); within bfloat16's
			// rounding of x.
			c("matmul16/compute-bf16/"+dt.String(), 1e-2, func(b *builder) []*engine.Node {
				w := b.half(dt, engine.Shape{29, 130}, 1)
				mm, mt := engine.MatMul16{Compute: engine.BF16}, engine.MatMul16{TransW: true, Compute: engine.BF16}
				return []*engine.Node{b.g.Apply1(mm, b.f32(engine.Shape{1, 130}, 1), w), b.g.Apply1(mm, b.f32(engine.Shape{3, 130}, 1), w),
					b.g.Apply1(mm, b.f32(engine.Shape{9, 130}, 1), w), b.g.Apply1(mt, b.f32(engine.Shape{9, 29}, 1), w)}
			}),
			c("lora_backward/compute-bf16/"+dt.String(), 1e-2, func(b *builder) []*engine.Node {
				dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 64}, 1)
				w, a, bb, xa := b.half(dt, engine.Shape{23, 64}, 0.5), b.f32(engine.Shape{5, 64}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.f32(engine.Shape{11, 5}, 1)
				return b.g.Apply(engine.LoRABackward{Scale: 1.5, NeedX: true, NeedA: true, NeedB: true, Compute: engine.BF16}, dy, x, w, a, bb, xa)[:3]
			}),
			c("lora/compute-bf16/"+dt.String(), 1e-2, func(b *builder) []*engine.Node {
				return b.g.Apply(engine.LoRA{Scale: 1.5, Compute: engine.BF16}, b.f32(engine.Shape{11, 64}, 1), b.half(dt, engine.Shape{23, 64}, 0.5),
					b.f32(engine.Shape{5, 64}, 0.5), b.f32(engine.Shape{23, 5}, 0.5))[:2]
			}),
			c("lora_backward/"+dt.String(), tol, func(b *builder) []*engine.Node {
				dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
				w, a, bb, xa := b.half(dt, engine.Shape{23, 41}, 0.5), b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.f32(engine.Shape{11, 5}, 1)
				return b.g.Apply(engine.LoRABackward{Scale: 1.5, NeedX: true, NeedA: true, NeedB: true}, dy, x, w, a, bb, xa)[:3]
			}),
		)
	}
	return cs
}

func leafName(i int) string { return "in" + string(rune('a'+i%26)) + string(rune('0'+i/26)) }

// nf4 is the type QLoRA uses.
const nf4 = quant.NF4

func c(name string, tol float64, f func(b *builder) []*engine.Node) Case {
	return Case{Name: name, Tol: tol, Build: func(g *engine.Graph, r *rand.Rand) ([]Leaf, []*engine.Node) {
		b := &builder{g: g, r: r}
		outs := f(b)
		return b.leaves, outs
	}}
}

func invFreq(headDim int) []float32 {
	f := make([]float32, headDim/2)
	for i := range f {
		f[i] = float32(1 / math.Pow(10000, float64(2*i)/float64(headDim)))
	}
	return f
}

// around returns sizes below, at and above t (and above 2t), for a tile or group of t.
func around(t int) []int {
	if t <= 1 {
		return []int{1, 3, 17}
	}
	return []int{t - 1, t, t + 1, 2*t + 3}
}

// Cases returns every check-mode case for a backend with the given tiles: the ops on odd shapes,
// then on shapes at the edges of the backend's tiles, the partial gradients, the KV cache, the
// adapter pool and shapes over many tiles.
func Cases(tiles engine.Tiles) []Case {
	cs := append(OpCases(), halfCases()...)
	cs = append(cs, TileCases(tiles)...)
	cs = append(cs, PartialGradCases()...)
	cs = append(cs, CacheCases()...)
	cs = append(cs, RowCases()...)
	return append(cs, MultiTileCases()...)
}

func trName(tr [2]bool) string {
	return map[[2]bool]string{{false, false}: "nn", {false, true}: "nt", {true, false}: "tn", {true, true}: "tt"}[tr]
}

var transposes = [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}}

func matmulCase(name string, tr [2]bool, m, n, k int) Case {
	return c(name, 1e-4, func(b *builder) []*engine.Node {
		sa, sb := engine.Shape{m, k}, engine.Shape{k, n}
		if tr[0] {
			sa = engine.Shape{k, m}
		}
		if tr[1] {
			sb = engine.Shape{n, k}
		}
		return []*engine.Node{b.g.MatMul(b.f32(sa, 1), b.f32(sb, 1), tr[0], tr[1])}
	})
}

// TileCases are shapes derived from a backend's tiles: matrix products below, at and above the
// M, N and K blocks (and few-row products), elementwise and row kernels around the group size,
// reductions around the single-pass limit, attention around the decode switch, the query block
// and the key tile, and row gathers around the row chunk.
func TileCases(t engine.Tiles) []Case {
	var cs []Case
	tm, tn, tk := max(t.MatMul[0], 2), max(t.MatMul[1], 2), max(t.MatMul[2], 2)
	shapes := [][3]int{{tm - 1, tn + 1, tk + 1}, {tm, tn, tk}, {tm + 1, tn - 1, 2*tk - 1}, {2*tm + 3, 2*tn + 1, 3*tk + 2}, {1, tn + 3, 2*tk + 1}, {3, 2*tn + 3, tk + 5}}
	for _, tr := range transposes {
		for _, s := range shapes {
			cs = append(cs, matmulCase(fmt.Sprintf("tiles/matmul/%s/%dx%dx%d", trName(tr), s[0], s[1], s[2]), tr, s[0], s[1], s[2]))
		}
	}
	for _, s := range shapes {
		for _, dt := range halves {
			for _, transW := range []bool{false, true} {
				cs = append(cs, c(fmt.Sprintf("tiles/matmul16/%s/transW=%v/%dx%dx%d", dt, transW, s[0], s[1], s[2]), 1e-4, func(b *builder) []*engine.Node {
					m, n, k := s[0], s[1], s[2]
					if transW {
						return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{m, n}, 1), b.half(dt, engine.Shape{n, k}, 1), false, false)}
					}
					return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{m, k}, 1), b.half(dt, engine.Shape{n, k}, 1), false, true)}
				}))
			}
		}
	}
	for _, n := range around(max(t.Group, 1)) {
		cs = append(cs, c(fmt.Sprintf("tiles/elementwise/%d", n), 1e-5, func(b *builder) []*engine.Node {
			x, y := b.f32(engine.Shape{n}, 1.5), b.f32(engine.Shape{n}, 1)
			g := b.g
			return []*engine.Node{g.SiLU(x), g.Mul(x, y), g.Scale(g.Add(x, y), 0.3), g.SwiGLU(x, y),
				g.Apply1(engine.UnaryBackward{Fn: engine.SiLU}, y, x), g.Dropout(x, b.i32([]int32{int32(n)}), 0.25, 5)}
		}))
		cs = append(cs, c(fmt.Sprintf("tiles/rows/%d", n), 1e-4, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{5, n}, 2)
			t := b.ints(5, 0, n)
			t[2] = -100
			g := b.g
			return []*engine.Node{g.RMSNorm(x, b.pos(engine.Shape{n}, 0.5, 1.5), 1e-5), g.Softmax(x),
				g.CrossEntropy(x, b.i32(t), -100), g.Apply1(engine.SumRows{}, x),
				g.Apply1(engine.CrossEntropyBackward{Ignore: -100}, b.pos(engine.Shape{1}, 0.5, 2), x, b.i32(t))}
		}))
	}
	if t.Reduce > 0 {
		for _, n := range append(around(t.Reduce), 3*t.Reduce+7, 100003) {
			cs = append(cs, c(fmt.Sprintf("tiles/reduce/%d", n), 1e-5, func(b *builder) []*engine.Node {
				x := b.f32(engine.Shape{n}, 1)
				return []*engine.Node{b.g.Sum(x), b.g.SumSquaresN(x)}
			}))
		}
	}
	dq := max(t.DecodeQueries, 1)
	aq, akv := max(t.AttentionQ, 1), max(t.AttentionKV, 1)
	for _, ql := range []int{1, dq, dq + 1, aq + 5} {
		kvl := max(ql, 2*akv+3)
		a := engine.Attention{Batch: 2, QLen: ql, KVLen: kvl, Heads: 4, KVHeads: 2, HeadDim: 12, Scale: 0.3}
		cs = append(cs, c(fmt.Sprintf("tiles/attention/q%d_kv%d", ql, kvl), 1e-4, func(b *builder) []*engine.Node {
			return b.g.Apply(a, b.f32(engine.Shape{2 * ql, 48}, 1), b.f32(engine.Shape{2 * kvl, 24}, 1), b.f32(engine.Shape{2 * kvl, 24}, 1))[:2]
		}))
	}
	for _, n := range around(max(t.RowChunk, 1)) {
		cs = append(cs, c(fmt.Sprintf("tiles/gather/%d", n), 1e-4, func(b *builder) []*engine.Node {
			const din, dout, r, slots = 37, 29, 5, 3
			sel := b.ints(n, -1, slots)
			sel[0] = 1
			x, y := b.f32(engine.Shape{n, din}, 1), b.f32(engine.Shape{n, dout}, 1)
			s := b.i32(sel)
			ids := b.i32(b.ints(n, 0, 7))
			return []*engine.Node{b.g.GatherLoRA(y, x, s, b.f32(engine.Shape{slots * r, din}, 0.3), b.f32(engine.Shape{slots * dout, r}, 0.3), r),
				b.g.GatherScaleCols(x, s, b.pos(engine.Shape{slots, din}, 0.5, 1.5)),
				b.g.Apply1(engine.EmbeddingBackward{Vocab: 9}, x, ids)}
		}))
	}
	return cs
}

// PartialGradCases run every backward op that computes only some of its gradients: only dx, only
// the weight's, and the other combinations the autodiff asks for.
func PartialGradCases() []Case {
	var cs []Case
	for _, nd := range [][3]bool{{true, false, false}, {false, true, false}, {false, false, true}, {false, true, true}, {true, false, true}} {
		for _, quant := range []bool{false, true} {
			name := fmt.Sprintf("partial/lora_backward/x%v_a%v_b%v/nf4=%v", nd[0], nd[1], nd[2], quant)
			drop := float32(0)
			if quant == nd[0] { // half the combinations with dropout
				drop = 0.25
				name += "/dropout"
			}
			cs = append(cs, c(name, 1e-4, func(b *builder) []*engine.Node {
				dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
				op := engine.LoRABackward{Scale: 0.7, Dropout: drop, Salt: 3, NeedX: nd[0], NeedA: nd[1], NeedB: nd[2]}
				in := []*engine.Node{dy, x}
				if quant {
					p, am, q := b.quant4(23, 41, 64, nf4)
					op.Quant = &q
					in = append(in, p, am)
				} else {
					in = append(in, b.f32(engine.Shape{23, 41}, 0.5))
				}
				in = append(in, b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5))
				if drop > 0 {
					in = append(in, b.i32([]int32{31}))
				}
				return b.g.Apply(op, append(in, b.f32(engine.Shape{11, 3}, 1))...)
			}))
		}
	}
	for _, nd := range [][2]bool{{true, false}, {false, true}} {
		suffix := fmt.Sprintf("%v_%v", nd[0], nd[1])
		cs = append(cs,
			c("partial/rmsnorm_backward/"+suffix, 1e-4, func(b *builder) []*engine.Node {
				return b.g.Apply(engine.RMSNormBackward{Eps: 1e-5, NeedX: nd[0], NeedW: nd[1]}, b.f32(engine.Shape{7, 93}, 1), b.f32(engine.Shape{7, 93}, 1), b.pos(engine.Shape{93}, 0.5, 1.5))
			}),
			c("partial/scale_cols_backward/"+suffix, 1e-4, func(b *builder) []*engine.Node {
				return b.g.Apply(engine.ScaleColsBackward{NeedX: nd[0], NeedL: nd[1]}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 1), b.pos(engine.Shape{37}, 0.5, 1.5))
			}),
			c("partial/swiglu_backward/"+suffix, 1e-4, func(b *builder) []*engine.Node {
				return b.g.Apply(engine.SwiGLUBackward{NeedGate: nd[0], NeedUp: nd[1]}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 2), b.f32(engine.Shape{13, 37}, 1))
			}),
		)
	}
	for _, nd := range [][3]bool{{true, false, false}, {false, true, true}, {false, false, true}} {
		cs = append(cs, c(fmt.Sprintf("partial/attention_backward/q%v_k%v_v%v", nd[0], nd[1], nd[2]), 5e-4, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 5, KVLen: 7, Heads: 6, KVHeads: 2, HeadDim: 10, Scale: float32(1 / math.Sqrt(10))}
			q, k, v := b.f32(engine.Shape{10, 60}, 1), b.f32(engine.Shape{14, 20}, 1), b.f32(engine.Shape{14, 20}, 1)
			fwd := b.g.Apply(a, q, k, v)
			return b.g.Apply(engine.AttentionBackward{Attention: a, NeedQ: nd[0], NeedK: nd[1], NeedV: nd[2]}, b.f32(engine.Shape{10, 60}, 1), q, k, v, fwd[0], fwd[1])
		}))
	}
	return cs
}

// OpCases check every op once on small odd shapes that no tile of 8, 16, 32 or 64 divides.
func OpCases() []Case {
	const tol = 1e-4
	var cs []Case
	for _, tr := range transposes {
		cs = append(cs, matmulCase("matmul/"+trName(tr), tr, 37, 29, 53))
	}
	cs = append(cs,
		c("matmul/gemv", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{1, 131}, 1), b.f32(engine.Shape{77, 131}, 1), false, true)}
		}),
		c("qmatmul/gemv", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 64, nf4)
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{1, 67}, 1), p, a, q)}
		}),
		// bfloat16 compute allowed (QuantSpec.Compute): a decoding step's GEMV, k a multiple of 128
		// (the CPU's AVX512_BF16 kernel takes it), within bfloat16's rounding of x and the codes.
		c("qmatmul/gemv-bf16", 1e-2, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 256, 64, nf4)
			q.Compute = engine.BF16
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{1, 256}, 1), p, a, q)}
		}),
		// 8-bit products allowed (QuantSpec.Compute I8): the same GEMV (the CPU's AVX512_VNNI
		// kernel takes it), within 8-bit rounding of x (a block of 64) and the codes.
		c("qmatmul/gemv-i8", 2e-2, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 256, 64, nf4)
			q.Compute = engine.I8
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{1, 256}, 1), p, a, q)}
		}),
		// The same allowance on a prefill's GEMM (more than 16 rows) and on the backward pass's
		// transposed product, odd depths included.
		c("qmatmul/gemm-bf16", 1e-2, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 64, nf4)
			q.Compute = engine.BF16
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{19, 67}, 1), p, a, q),
				b.g.Apply1(engine.QMatMul{Quant: q, TransW: true}, b.f32(engine.Shape{19, 45}, 1), p, a)}
		}),
		c("qmatmul/gemm", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 32, nf4)
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{9, 67}, 1), p, a, q)}
		}),
		c("qmatmul/fp4", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 64, quant.FP4)
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{9, 67}, 1), p, a, q), b.g.QMatMul(b.f32(engine.Shape{1, 67}, 1), p, a, q)}
		}),
		c("dequantize4", 0, func(b *builder) []*engine.Node {
			// 45·67 = 3015 elements: an odd count (the last byte half used), a partial last block.
			p, a, q := b.quant4(45, 67, 64, nf4)
			pf, af, qf := b.quant4(7, 9, 32, quant.FP4)
			return []*engine.Node{b.g.Dequantize4(p, a, q), b.g.Dequantize4(pf, af, qf)}
		}),
		c("qmatmul/transposed", tol, func(b *builder) []*engine.Node {
			p, a, q := b.quant4(45, 67, 64, nf4)
			return []*engine.Node{b.g.Apply1(engine.QMatMul{Quant: q, TransW: true}, b.f32(engine.Shape{9, 45}, 1), p, a)}
		}),
		c("lora/dense", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.LoRA{Scale: 1.5}, b.f32(engine.Shape{11, 41}, 1), b.f32(engine.Shape{23, 41}, 0.5),
				b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5))[:2]
		}),
		c("lora/nf4", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{11, 41}, 1)
			p, a, q := b.quant4(23, 41, 64, nf4)
			return b.g.Apply(engine.LoRA{Scale: 0.7, Quant: &q}, x, p, a, b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5))[:2]
		}),
		c("lora_backward/dense", tol, func(b *builder) []*engine.Node {
			dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
			w, a, bb, xa := b.f32(engine.Shape{23, 41}, 0.5), b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.f32(engine.Shape{11, 5}, 1)
			return b.g.Apply(engine.LoRABackward{Scale: 1.5, NeedX: true, NeedA: true, NeedB: true}, dy, x, w, a, bb, xa)[:3]
		}),
		c("lora_backward/nf4", tol, func(b *builder) []*engine.Node {
			dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
			p, am, q := b.quant4(23, 41, 64, nf4)
			a, bb, xa := b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5), b.f32(engine.Shape{11, 3}, 1)
			return b.g.Apply(engine.LoRABackward{Scale: 0.7, Quant: &q, NeedX: true, NeedA: true, NeedB: true}, dy, x, p, am, a, bb, xa)[:3]
		}),
		c("lora/dropout", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.LoRA{Scale: 1.5, Dropout: 0.2, Salt: 9}, b.f32(engine.Shape{11, 41}, 1), b.f32(engine.Shape{23, 41}, 0.5),
				b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.i32([]int32{4242}))[:2]
		}),
		c("lora/nf4_dropout", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{11, 41}, 1)
			p, a, q := b.quant4(23, 41, 64, nf4)
			return b.g.Apply(engine.LoRA{Scale: 0.7, Quant: &q, Dropout: 0.3, Salt: 1}, x, p, a, b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5), b.i32([]int32{-7}))[:2]
		}),
		c("lora_backward/dropout", tol, func(b *builder) []*engine.Node {
			dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
			w, a, bb, xa := b.f32(engine.Shape{23, 41}, 0.5), b.f32(engine.Shape{5, 41}, 0.5), b.f32(engine.Shape{23, 5}, 0.5), b.f32(engine.Shape{11, 5}, 1)
			return b.g.Apply(engine.LoRABackward{Scale: 1.5, Dropout: 0.2, Salt: 9, NeedX: true, NeedA: true, NeedB: true}, dy, x, w, a, bb, b.i32([]int32{4242}), xa)[:3]
		}),
		c("lora_backward/nf4_dropout", tol, func(b *builder) []*engine.Node {
			dy, x := b.f32(engine.Shape{11, 23}, 1), b.f32(engine.Shape{11, 41}, 1)
			p, am, q := b.quant4(23, 41, 64, nf4)
			a, bb, xa := b.f32(engine.Shape{3, 41}, 0.5), b.f32(engine.Shape{23, 3}, 0.5), b.f32(engine.Shape{11, 3}, 1)
			return b.g.Apply(engine.LoRABackward{Scale: 0.7, Quant: &q, Dropout: 0.3, Salt: 1, NeedX: true, NeedA: true, NeedB: true}, dy, x, p, am, a, bb, b.i32([]int32{-7}), xa)[:3]
		}),
		c("scale_cols", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.ScaleCols(b.f32(engine.Shape{13, 37}, 1), b.pos(engine.Shape{37}, 0.5, 1.5))}
		}),
		c("div_sqrt", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.DivSqrt(b.f32(engine.Shape{13, 37}, 1), b.pos(engine.Shape{37}, 0.05, 30))}
		}),
		c("scale_cols_backward", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.ScaleColsBackward{NeedX: true, NeedL: true}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 1), b.pos(engine.Shape{37}, 0.5, 1.5))[:2]
		}),
		c("rmsnorm", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.RMSNorm(b.f32(engine.Shape{7, 93}, 1), b.pos(engine.Shape{93}, 0.5, 1.5), 1e-5)}
		}),
		c("rmsnorm_backward", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.RMSNormBackward{Eps: 1e-5, NeedX: true, NeedW: true}, b.f32(engine.Shape{7, 93}, 1), b.f32(engine.Shape{7, 93}, 1), b.pos(engine.Shape{93}, 0.5, 1.5))[:2]
		}),
		c("rope", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{9, 3 * 10}, 1)
			return []*engine.Node{b.g.RoPE(x, b.i32(b.ints(9, 0, 500)), 3, 10, invFreq(10), 1)}
		}),
		c("rope/inverse", tol, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{9, 3 * 10}, 1)
			return []*engine.Node{b.g.Apply1(engine.RoPE{Heads: 3, HeadDim: 10, InvFreq: invFreq(10), AttnScale: 1.1, Inverse: true}, x, b.i32(b.ints(9, 0, 500)))}
		}),
		c("attention/prefill", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 9, KVLen: 9, Heads: 6, KVHeads: 2, HeadDim: 10, Scale: float32(1 / math.Sqrt(10))}
			return b.g.Apply(a, b.f32(engine.Shape{18, 60}, 1), b.f32(engine.Shape{18, 20}, 1), b.f32(engine.Shape{18, 20}, 1))[:2]
		}),
		c("attention/decode", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 1, QLen: 1, KVLen: 13, Heads: 6, KVHeads: 3, HeadDim: 10, Scale: 0.3}
			return b.g.Apply(a, b.f32(engine.Shape{1, 60}, 1), b.f32(engine.Shape{13, 30}, 1), b.f32(engine.Shape{13, 30}, 1))[:2]
		}),
		c("attention_backward", 5e-4, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 5, KVLen: 7, Heads: 6, KVHeads: 2, HeadDim: 10, Scale: float32(1 / math.Sqrt(10))}
			q, k, v := b.f32(engine.Shape{10, 60}, 1), b.f32(engine.Shape{14, 20}, 1), b.f32(engine.Shape{14, 20}, 1)
			fwd := b.g.Apply(a, q, k, v)
			dout := b.f32(engine.Shape{10, 60}, 1)
			return b.g.Apply(engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}, dout, q, k, v, fwd[0], fwd[1])[:3]
		}),
		// Packed documents: each query sees its own document only (Docs, per-query starts).
		// Two sequences of 150 (three query blocks and key tiles on a GPU, the last block's
		// documents starting past the first tile), documents crossing block edges; then few
		// queries (the per-query kernels); then the backward.
		c("attention/docs", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 150, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3, Docs: true}
			starts := b.i32(append(docStarts(1, 30, 9, 3, 107), docStarts(131, 19)...))
			return b.g.Apply(a, b.f32(engine.Shape{300, 40}, 1), b.f32(engine.Shape{300, 20}, 1), b.f32(engine.Shape{300, 20}, 1), starts)[:2]
		}),
		c("attention/docs_short", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 6, KVLen: 6, Heads: 6, KVHeads: 3, HeadDim: 10, Scale: 0.3, Docs: true}
			starts := b.i32(append(docStarts(2, 3, 1), docStarts(6)...))
			return b.g.Apply(a, b.f32(engine.Shape{12, 60}, 1), b.f32(engine.Shape{12, 30}, 1), b.f32(engine.Shape{12, 30}, 1), starts)[:2]
		}),
		c("attention_backward/docs", 5e-4, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 150, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3, Docs: true}
			starts := b.i32(append(docStarts(5, 60, 5, 80), docStarts(1, 1, 130, 18)...))
			q, k, v := b.f32(engine.Shape{300, 40}, 1), b.f32(engine.Shape{300, 20}, 1), b.f32(engine.Shape{300, 20}, 1)
			fwd := b.g.Apply(a, q, k, v, starts)
			dout := b.f32(engine.Shape{300, 40}, 1)
			return b.g.Apply(engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}, dout, q, k, v, fwd[0], fwd[1], starts)[:3]
		}),
		c("silu", tol, func(b *builder) []*engine.Node { return []*engine.Node{b.g.SiLU(b.f32(engine.Shape{13, 37}, 2))} }),
		c("silu_backward", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Apply1(engine.UnaryBackward{Fn: engine.SiLU}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 2))}
		}),
		c("swiglu", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.SwiGLU(b.f32(engine.Shape{13, 37}, 2), b.f32(engine.Shape{13, 37}, 1))}
		}),
		c("swiglu_backward", tol, func(b *builder) []*engine.Node {
			return b.g.Apply(engine.SwiGLUBackward{NeedGate: true, NeedUp: true}, b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 2), b.f32(engine.Shape{13, 37}, 1))[:2]
		}),
		c("softmax", tol, func(b *builder) []*engine.Node { return []*engine.Node{b.g.Softmax(b.f32(engine.Shape{7, 301}, 3))} }),
		c("softmax_backward", tol, func(b *builder) []*engine.Node {
			y := b.g.Softmax(b.f32(engine.Shape{7, 301}, 3))
			return []*engine.Node{b.g.Apply1(engine.SoftmaxBackward{}, b.f32(engine.Shape{7, 301}, 1), y)}
		}),
		c("embedding", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Embedding(b.f32(engine.Shape{53, 19}, 1), b.i32(b.ints(23, 0, 53)))}
		}),
		c("embedding/gather", 0, func(b *builder) []*engine.Node {
			ids := b.ints(23, -2, 53)
			ids[5] = -1
			table := b.f32(engine.Shape{53, 19}, 1)
			return []*engine.Node{b.g.Gather(table, b.i32(ids), 0), b.g.Gather(table, b.i32(ids), 1.5)}
		}),
		c("embedding_backward", tol, func(b *builder) []*engine.Node {
			ids := b.ints(23, 0, 7) // repeated ids accumulate
			return []*engine.Node{b.g.Apply1(engine.EmbeddingBackward{Vocab: 11}, b.f32(engine.Shape{23, 19}, 1), b.i32(ids))}
		}),
		c("cross_entropy", tol, func(b *builder) []*engine.Node {
			t := b.ints(17, 0, 301)
			t[3], t[8] = -100, -100
			return []*engine.Node{b.g.CrossEntropy(b.f32(engine.Shape{17, 301}, 3), b.i32(t), -100)}
		}),
		c("cross_entropy_backward", tol, func(b *builder) []*engine.Node {
			t := b.ints(17, 0, 301)
			t[3] = -100
			return []*engine.Node{b.g.Apply1(engine.CrossEntropyBackward{Ignore: -100}, b.pos(engine.Shape{1}, 0.5, 2), b.f32(engine.Shape{17, 301}, 3), b.i32(t))}
		}),
		c("elementwise", tol, func(b *builder) []*engine.Node {
			x, y := b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{13, 37}, 1)
			g := b.g
			return []*engine.Node{g.Add(x, y), g.Mul(x, y), g.Scale(x, -0.7), g.AddBias(x, b.f32(engine.Shape{37}, 1)),
				g.Apply1(engine.SumRows{}, x), g.Sum(y),
				g.Apply1(engine.Expand{Shape: engine.Shape{3, 5}}, b.f32(engine.Shape{1}, 1)),
				g.Apply1(engine.Fill{Shape: engine.Shape{7}, Value: 2.5})}
		}),
		c("dropout", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.Dropout(b.f32(engine.Shape{13, 37}, 1), b.i32([]int32{12345}), 0.3, 77)}
		}),
		c("cast", 0, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{13, 37}, 10)
			g := b.g
			return []*engine.Node{g.Cast(x, engine.F16), g.Cast(x, engine.BF16), g.Cast(g.Cast(x, engine.BF16), engine.F32)}
		}),
		// A training step's update on the device: the multi-tensor sum of squares (one operand
		// past the single-pass size), the clip decision (clipped: the norm is far above 1) and
		// AdamW reading them, then a gradient accumulated twice.
		c("optimizer_step", 1e-5, func(b *builder) []*engine.Node {
			s := engine.Shape{13, 37}
			g := b.g
			g1, g2, g3 := b.f32(s, 1), b.f32(engine.Shape{5003}, 0.1), b.f32(engine.Shape{3}, 2)
			ss := g.SumSquaresN(g1, g2, g3)
			ctl := b.vals(3e-2, 0.5, 3) // lr, scale, step
			st := g.ClipStatus(b.vals(2.75), ss, ctl, 1)
			upd := g.Apply(engine.AdamWStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01},
				b.f32(s, 1), g1, b.f32(s, 0.1), b.pos(s, 0.001, 0.01), st, ctl)
			acc := g.Apply1(engine.Accumulate{}, g.Apply1(engine.Accumulate{Overwrite: true}, b.f32(engine.Shape{5003}, 1), g2), b.f32(engine.Shape{5003}, 1))
			return append([]*engine.Node{ss, st, acc}, upd...)
		}),
		// Gradients packed into one flat buffer at offsets (copied, then a second micro-batch's
		// added) and unpacked from it, as data parallelism moves a step's gradients: spans of
		// odd lengths at odd offsets, one past a workgroup.
		c("accumulate_span", 0, func(b *builder) []*engine.Node {
			g := b.g
			x := []*engine.Node{b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{3}, 1), b.f32(engine.Shape{301}, 1)}
			y := []*engine.Node{b.f32(engine.Shape{13, 37}, 1), b.f32(engine.Shape{3}, 1), b.f32(engine.Shape{301}, 1)}
			fused := b.f32(engine.Shape{13*37 + 3 + 301 + 5}, 1)
			off := []int{2, 2 + 13*37, 5 + 13*37}
			for i := range x {
				n := x[i].Shape().Numel()
				fused = g.Apply1(engine.Accumulate{Overwrite: true, Dst: off[i], N: n}, fused, x[i])
			}
			for i := range y {
				fused = g.Apply1(engine.Accumulate{Dst: off[i], N: y[i].Shape().Numel()}, fused, y[i])
			}
			out := []*engine.Node{fused}
			for i, sh := range []engine.Shape{{13, 37}, {3}, {301}} {
				out = append(out, g.Apply1(engine.Accumulate{Overwrite: true, Src: off[i], N: sh.Numel()}, b.f32(sh, 1), fused))
			}
			// Part of a tensor added into part of another.
			out = append(out, g.Apply1(engine.Accumulate{Dst: 7, Src: 11, N: 250}, b.f32(engine.Shape{17, 19}, 1), b.f32(engine.Shape{290}, 1)))
			return out
		}),
		// The 8-bit update (bitsandbytes' blockwise AdamW8bit) from a random state: three
		// blocks, the last one partial, clipped, with weight decay; then a zero state's first
		// step (every block's absmax 0). Codes are compared as numbers: one code off at a
		// rounding tie is a relative error of 1/255, above the tolerance.
		c("optimizer_step_8bit", 1e-4, func(b *builder) []*engine.Node {
			const n = 2*engine.Optim8Block + 77 // not a multiple of 4: the moments' codes are padded
			nb := engine.Optim8Blocks(n)
			g := b.g
			qmap := b.vals(append(append([]float32(nil), quant.DynamicCode[:]...), quant.DynamicCodeUnsigned[:]...)...)
			ctl := b.vals(3e-2, 0.5, 3)
			grad := b.f32(engine.Shape{n}, 1)
			st := g.ClipStatus(b.vals(2.75), g.SumSquaresN(grad), ctl, 1)
			codes := func(zero bool) *engine.Node {
				raw := make([]byte, 2*engine.Optim8Codes(n))
				for i := range raw {
					if !zero {
						raw[i] = byte(b.r.IntN(256))
					}
				}
				q := g.Input(leafName(len(b.leaves)), engine.U8, engine.Shape{len(raw)})
				b.leaves = append(b.leaves, Leaf{Node: q, U8: raw})
				return q
			}
			op := engine.AdamW8bitStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
			upd := g.Apply(op, b.f32(engine.Shape{n}, 1), grad, codes(false), b.pos(engine.Shape{2 * nb}, 0.01, 1), qmap, st, ctl)
			zeroAbs := b.vals(make([]float32, 2*nb)...)
			first := g.Apply(engine.AdamW8bitStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, b.f32(engine.Shape{n}, 1), grad, codes(true), zeroAbs, qmap, st, b.vals(1e-2, 1, 1))
			return append(append([]*engine.Node{st}, upd...), first...)
		}),
		// Sampling candidates: the top k of rows longer than a workgroup, with ties (values
		// rounded to a coarse grid) decided by the lower index, and k = 1 (greedy).
		c("top_k", 0, func(b *builder) []*engine.Node {
			x := b.f32(engine.Shape{5, 613}, 2)
			for i, v := range b.leaves[len(b.leaves)-1].F32 {
				b.leaves[len(b.leaves)-1].F32[i] = float32(math.Round(float64(v)*4) / 4)
			}
			return []*engine.Node{b.g.TopK(x, 40), b.g.TopK(x, 1), b.g.TopK(b.f32(engine.Shape{3, 7}, 1), 7)}
		}),
		// Sampling candidates (TopK's Sample): rows ranked by value (greedy, top-k, top-p) beside
		// rows ranked by their Gumbel score at several temperatures, each with its mass; a row
		// with NaN and −inf values. The tolerance is the mass's, an f32 sum; an index that differs fails.
		c("top_k_sample", 1e-5, func(b *builder) []*engine.Node {
			const rows, v = 5, 613
			x := b.f32(engine.Shape{rows, v}, 2)
			xs := b.leaves[len(b.leaves)-1].F32
			xs[3*v+5], xs[3*v+100], xs[3*v+200] = float32(math.NaN()), float32(math.Inf(-1)), float32(math.Inf(-1))
			var ctl []int32
			for r, t := range []float64{1, 0.7, 1.3, 0.9, 2} {
				gumbel := 1 - int32(r%2) // rows 1 and 3 rank by value
				ctl = append(ctl, int32(math.Float32bits(float32(1/t))), gumbel, int32(b.r.Uint32()), int32(b.r.Uint32()))
			}
			ctlN := b.g.Reshape(b.i32(ctl), rows, engine.SampleCtlWords)
			return []*engine.Node{b.g.SampleTopK(x, ctlN, 8), b.g.SampleTopK(x, ctlN, 1)}
		}),
		// A non-finite gradient skips the update: p, m and v come back as they were.
		c("optimizer_skip", 0, func(b *builder) []*engine.Node {
			s := engine.Shape{7, 5}
			g := b.g
			grad := b.vals(1, float32(math.NaN()), 2)
			ctl := b.vals(1e-2, 1, 1)
			st := g.ClipStatus(b.vals(1.5), g.SumSquaresN(b.f32(s, 1), grad), ctl, 1)
			return append([]*engine.Node{st}, g.Apply(engine.AdamWStep{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8},
				b.f32(s, 1), b.f32(s, 1), b.f32(s, 0.1), b.pos(s, 0.001, 0.01), st, ctl)...)
		}),
	)
	return cs
}

// CacheCases check the in-place KV-cache write and attention over a cache of slots: sequences of
// different lengths in any slots, decoding (one query each) and prefilling (many).
func CacheCases() []Case {
	const kvDim, heads, headDim = 20, 4, 10
	// ragged writes each sequence's new rows (slot·stride + position) into a cache of slots, then
	// attends from them.
	seq := func(first, n int) []int32 {
		rows := make([]int32, n)
		for i := range rows {
			rows[i] = int32(first + i)
		}
		return rows
	}
	ragged := func(slots, stride, qlen int, rows []int32) func(b *builder) []*engine.Node {
		return func(b *builder) []*engine.Node {
			n := len(rows)
			kc, vc := b.f32(engine.Shape{slots * stride, kvDim}, 1), b.f32(engine.Shape{slots * stride, kvDim}, 1)
			r := b.i32(rows)
			k := b.g.Apply1(engine.CacheWrite{}, kc, b.f32(engine.Shape{n, kvDim}, 1), r)
			v := b.g.Apply1(engine.CacheWrite{}, vc, b.f32(engine.Shape{n, kvDim}, 1), r)
			a := engine.Attention{Batch: n / qlen, QLen: qlen, KVLen: stride, Heads: heads, KVHeads: 2, HeadDim: headDim, Scale: 0.3, KVStride: stride}
			outs := b.g.Apply(a, b.f32(engine.Shape{n, heads * headDim}, 1), k, v, r)
			return []*engine.Node{outs[0], outs[1], k, v}
		}
	}
	return []Case{
		// Three sequences, two new tokens each: slot 2 at positions 5-6, slot 0 at 0-1 (its
		// first tokens), slot 3 at 14-15 (the slot's last rows).
		c("cache_attention/ragged", 1e-4, ragged(4, 16, 2, []int32{37, 38, 0, 1, 62, 63})),
		// Decoding: one token for each of five sequences of different lengths.
		c("cache_attention/decode", 1e-4, ragged(6, 16, 1, []int32{16 + 9, 0, 80 + 15, 48 + 3, 32 + 12})),
		// Prefill of one sequence in slot 1 of 3 after three cached tokens: 12 queries.
		c("cache_attention/prefill", 1e-4, ragged(3, 20, 12, []int32{23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34})),
		// A long prefill: 70 queries at positions 17-86 of slot 1 of 3 (two query blocks on a GPU).
		c("cache_attention/prefill_long", 1e-4, ragged(3, 100, 70, seq(117, 70))),
		// Two prefills of 20 queries in one step: slot 2 at positions 30-49, slot 0 at 0-19.
		c("cache_attention/prefill_batch", 1e-4, ragged(3, 100, 20, append(seq(230, 20), seq(0, 20)...))),
	}
}

// RowCases check the ops that give each row of a batch its own adapter from a pool.
func RowCases() []Case {
	return []Case{
		c("gather_lora", 1e-4, func(b *builder) []*engine.Node {
			// A pool of three adapters of rank 5 (padded), rows picking any or none.
			const n, din, dout, r, slots = 11, 37, 29, 5, 3
			x := b.f32(engine.Shape{n, din}, 1)
			sel := b.i32([]int32{1, -1, 2, 1, 0, 2, 1, -1, 0, 0, 2})
			y := b.f32(engine.Shape{n, dout}, 1)
			return []*engine.Node{b.g.GatherLoRA(y, x, sel, b.f32(engine.Shape{slots * r, din}, 0.3), b.f32(engine.Shape{slots * dout, r}, 0.3), r)}
		}),
		c("gather_scale_cols", 1e-5, func(b *builder) []*engine.Node {
			const n, d, slots = 7, 37, 4
			sel := b.i32([]int32{0, 3, 3, -1, 2, 0, 1})
			return []*engine.Node{b.g.GatherScaleCols(b.f32(engine.Shape{n, d}, 1), sel, b.pos(engine.Shape{slots, d}, 0.5, 1.5))}
		}),
	}
}

// docStarts is the per-query document starts of one sequence packed from documents of the given
// lengths: each token's index of its document's first token.
func docStarts(lens ...int) []int32 {
	var st []int32
	for _, n := range lens {
		first := int32(len(st))
		for range n {
			st = append(st, first)
		}
	}
	return st
}
