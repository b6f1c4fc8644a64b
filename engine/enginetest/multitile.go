package enginetest

import (
	"github.com/lathe-ml/lathe/engine"
)

// MultiTileCases span many tiles of a GPU's kernels (64-wide matmul tiles, 64-query attention
// blocks, key chunks, 8-row gathers, packed 4-bit words): matmul over 3×2 tiles and 7 k-slices,
// attention over two query blocks and three key tiles, attention over a KV cache, GatherLoRA over
// several chunks, 4-bit products over rows that straddle packed words, single-row products.
func MultiTileCases() []Case {
	const tol = 1e-4
	return []Case{
		c("multi/matmul_tiles", tol, func(b *builder) []*engine.Node {
			return []*engine.Node{b.g.MatMul(b.f32(engine.Shape{100, 130}, 1), b.f32(engine.Shape{70, 100}, 1), true, true)}
		}),
		c("multi/attention_tiles", tol, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 70, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3}
			return b.g.Apply(a, b.f32(engine.Shape{140, 40}, 1), b.f32(engine.Shape{300, 20}, 1), b.f32(engine.Shape{300, 20}, 1))[:2]
		}),
		c("multi/attention_backward_tiles", 5e-4, func(b *builder) []*engine.Node {
			a := engine.Attention{Batch: 2, QLen: 70, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3}
			q, k, v := b.f32(engine.Shape{140, 40}, 1), b.f32(engine.Shape{300, 20}, 1), b.f32(engine.Shape{300, 20}, 1)
			fwd := b.g.Apply(a, q, k, v)
			return b.g.Apply(engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}, b.f32(engine.Shape{140, 40}, 1), q, k, v, fwd[0], fwd[1])[:3]
		}),
		c("multi/embedding_backward_chunks", tol, func(b *builder) []*engine.Node {
			// Three chunks of ids, dims over two blocks.
			dy := b.f32(engine.Shape{600, 300}, 1)
			return []*engine.Node{b.g.Apply1(engine.EmbeddingBackward{Vocab: 17}, dy, b.i32(b.ints(600, 0, 13)))}
		}),
		c("multi/qmatmul_words", tol, func(b *builder) []*engine.Node {
			// K a multiple of 8: the GEMM decodes whole packed words, in both orientations.
			p, am, q := b.quant4(72, 136, 32, nf4)
			x, xt := b.f32(engine.Shape{70, 136}, 1), b.f32(engine.Shape{70, 72}, 1)
			return []*engine.Node{b.g.QMatMul(x, p, am, q), b.g.Apply1(engine.QMatMul{Quant: q, TransW: true}, xt, p, am)}
		}),
		c("multi/attention_decode_chunks", tol, func(b *builder) []*engine.Node {
			// Two queries over three key chunks; head dim 72 > 64 invocations.
			a := engine.Attention{Batch: 2, QLen: 2, KVLen: 150, Heads: 4, KVHeads: 1, HeadDim: 72, Scale: 0.12}
			return b.g.Apply(a, b.f32(engine.Shape{4, 4 * 72}, 1), b.f32(engine.Shape{300, 72}, 1), b.f32(engine.Shape{300, 72}, 1))[:2]
		}),
		c("multi/cache_attention_chunks", tol, func(b *builder) []*engine.Node {
			// Three sequences of 24 queries (a batch of prefills) in slots 0, 1, 2 of 160 rows: up
			// to 152 keys (three key chunks), head dim 72 > 64 invocations.
			const stride, hd, qlen = 160, 72, 24
			var rows []int32
			for s, first := range []int{128, 50, 0} {
				for i := range qlen {
					rows = append(rows, int32(s*stride+first+i))
				}
			}
			return cachedAttention(b, rows, 3*stride, hd, engine.Attention{Batch: 3, QLen: qlen, KVLen: stride, Heads: 4, KVHeads: 1, HeadDim: hd, Scale: 0.12, KVStride: stride})
		}),
		c("multi/cache_attention_scattered", tol, func(b *builder) []*engine.Node {
			// One sequence of 80 queries (the tiled kernel, two query blocks) whose rows are not a
			// prefill's: 30 consecutive in slot 1, 20 backwards in slot 0, 30 every other row of
			// slot 2. Each query must still see only its own slot up to its own row.
			const stride, hd = 64, 16
			var rows []int32
			for i := range 30 {
				rows = append(rows, int32(stride+10+i))
			}
			for i := range 20 {
				rows = append(rows, int32(40-i))
			}
			for i := range 30 {
				rows = append(rows, int32(2*stride+2*i))
			}
			return cachedAttention(b, rows, 3*stride, 2*hd, engine.Attention{Batch: 1, QLen: len(rows), KVLen: stride, Heads: 4, KVHeads: 2, HeadDim: hd, Scale: 0.2, KVStride: stride})
		}),
		c("multi/gather_lora_chunks", tol, func(b *builder) []*engine.Node {
			// Three chunks of rows (the middle one picks no slot), in and out over two blocks.
			const n, din, dout, rank, slots = 20, 600, 300, 17, 3
			sel := b.i32([]int32{1, 0, 1, 1, 2, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 0, 1})
			y, x := b.f32(engine.Shape{n, dout}, 1), b.f32(engine.Shape{n, din}, 1)
			return []*engine.Node{b.g.GatherLoRA(y, x, sel, b.f32(engine.Shape{slots * rank, din}, 0.1), b.f32(engine.Shape{slots * dout, rank}, 0.3), rank)}
		}),
		c("multi/qgemv_words", tol, func(b *builder) []*engine.Node {
			p, am, q := b.quant4(9, 1003, 64, nf4)
			return []*engine.Node{b.g.QMatMul(b.f32(engine.Shape{1, 1003}, 1), p, am, q)}
		}),
		c("multi/gemv", tol, func(b *builder) []*engine.Node {
			// The single-row paths: dense x·Wᵀ, x·W, a transposed column, LoRA decode.
			x, col := b.f32(engine.Shape{1, 300}, 1), b.f32(engine.Shape{300, 1}, 1)
			w, wt := b.f32(engine.Shape{77, 300}, 1), b.f32(engine.Shape{300, 77}, 1)
			A, B := b.f32(engine.Shape{4, 300}, 1), b.f32(engine.Shape{77, 4}, 1)
			outs := []*engine.Node{b.g.MatMul(x, w, false, true), b.g.MatMul(x, wt, false, false), b.g.MatMul(col, wt, true, false)}
			return append(outs, b.g.Apply(engine.LoRA{Scale: 0.5}, x, w, A, B)[:2]...)
		}),
	}
}

// cachedAttention writes new keys and values at rows of a cache of cacheRows rows and kvDim
// columns, then attends from queries at those rows.
func cachedAttention(b *builder, rows []int32, cacheRows, kvDim int, a engine.Attention) []*engine.Node {
	n := len(rows)
	r := b.i32(rows)
	kc, vc := b.f32(engine.Shape{cacheRows, kvDim}, 1), b.f32(engine.Shape{cacheRows, kvDim}, 1)
	k := b.g.Apply1(engine.CacheWrite{}, kc, b.f32(engine.Shape{n, kvDim}, 1), r)
	v := b.g.Apply1(engine.CacheWrite{}, vc, b.f32(engine.Shape{n, kvDim}, 1), r)
	return b.g.Apply(a, b.f32(engine.Shape{n, a.Heads * a.HeadDim}, 1), k, v, r)[:2]
}
