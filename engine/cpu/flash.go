package cpu

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu/gemm"
)

// Flash attention on the CPU (FlashAttention-2's loop order, on the blocked SGEMM).
//
// Layouts are engine.Attention's: q and out [batch, qLen, heads, headDim], k and v [batch, kvLen,
// kvHeads, headDim]. The query heads of KV head kh are heads kh·group … kh·group+group−1, so a
// position's group is group·headDim contiguous floats: a tile of positions i0..i1 gathers into a
// [(i1−i0)·group, headDim] matrix with one copy a position, row (i−i0)·group+r. The keys of a
// block are read in place (row stride kvHeads·headDim).
//
// Each row of a tile sees the keys [start_i, off+i] (off = kvLen − qLen; start_i its document's
// first key, or 0): an interval, so a block's mask is a range a row and the exponentials of a row
// are one ExpSub over it, zero elsewhere.

// flashPlan holds the sizes shared by the forward and backward passes.
type flashPlan struct {
	a                      engine.Attention
	group, off, ld, rowsPQ int  // ld: a key row's stride; rowsPQ: rows a query position
	bq, bk                 int  // positions a query tile, keys a block
	decoding               bool // a tile is a few rows: gemm.Attend* rather than Sgemm
	starts                 []int32
}

func newFlashPlan(a engine.Attention, starts []int32) flashPlan {
	p := flashPlan{a: a, group: a.Heads / a.KVHeads, off: a.KVLen - a.QLen, ld: a.KVHeads * a.HeadDim, starts: starts}
	p.rowsPQ = p.group
	// About 64 rows a tile (the GEMMs' m) and 128 keys a block: the score block (32 KiB) and the
	// gathered tiles stay in L2. A decoding tile (a few positions) takes longer blocks: its
	// GEMMs are thin, and each block costs a rescale of the output rows.
	// Rows a tile a multiple of the micro-kernel's (six): 64 rows left a 4-row edge tile for each
	// GEMM, on the slower edge path.
	step := gemm.MR / gcd(gemm.MR, p.group)
	p.bq = ((64+p.group-1)/p.group + step - 1) / step * step
	p.bk = 128
	if a.QLen*p.group <= 16 {
		p.bk = 512
		p.decoding = true
	}
	return p
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// flashBufs recycles the tasks' working memory (a few hundred KiB each), which a fresh
// allocation a task would turn into garbage-collector work at every step.
var flashBufs sync.Pool

// flashBuf is a zeroed slice of n floats from flashBufs.
func flashBuf(n int) *[]float32 {
	p, _ := flashBufs.Get().(*[]float32)
	if p == nil || cap(*p) < n {
		b := make([]float32, n)
		return &b
	}
	*p = (*p)[:n]
	clear(*p)
	return p
}

// visible is the interval of keys [lo, hi) query i of sequence b sees.
func (p *flashPlan) visible(b, i int) (lo, hi int) {
	if p.starts != nil {
		lo = int(p.starts[b*p.a.QLen+i])
	}
	return lo, p.off + i + 1
}

// gather copies the group's rows of positions i0..i1 of sequence b, KV head kh, from x (q, out or
// dout layout) into dst [(i1−i0)·group, headDim].
func (p *flashPlan) gather(dst, x []float32, b, kh, i0, i1 int) {
	a, gd := p.a, p.group*p.a.HeadDim
	for i := i0; i < i1; i++ {
		src := ((b*a.QLen+i)*a.Heads + kh*p.group) * a.HeadDim
		copy(dst[(i-i0)*gd:(i-i0+1)*gd], x[src:src+gd])
	}
}

// scatter is gather's inverse.
func (p *flashPlan) scatter(x, src []float32, b, kh, i0, i1 int) {
	a, gd := p.a, p.group*p.a.HeadDim
	for i := i0; i < i1; i++ {
		dst := ((b*a.QLen+i)*a.Heads + kh*p.group) * a.HeadDim
		copy(x[dst:dst+gd], src[(i-i0)*gd:(i-i0+1)*gd])
	}
}

// keyRange is the keys any query of positions i0..i1 of sequence b sees: [lo, hi).
func (p *flashPlan) keyRange(b, i0, i1 int) (lo, hi int) {
	lo, hi = p.a.KVLen, 0
	for i := i0; i < i1; i++ {
		l, h := p.visible(b, i)
		lo, hi = min(lo, l), max(hi, h)
	}
	return lo, hi
}

// headPanels are one (sequence, KV head)'s keys and values packed once for all its query tiles
// (gemm.Panel): Kᵀ (depth headDim, a column a key) and V (depth the keys). The first tile of the
// head to run packs them; the last to finish releases them, so only the heads in progress hold
// packed copies.
type headPanels struct {
	once  sync.Once
	left  atomic.Int32
	kt, v gemm.Panel
}

// flashForward is attention's forward pass; one task a (sequence, KV head, query tile), or
// flashDecode's split for a decoding step.
func flashForward(a engine.Attention, out, lse, q, k, v []float32, starts []int32) {
	p := newFlashPlan(a, starts)
	if p.decoding {
		flashDecode(p, out, lse, q, k, v)
		return
	}
	D, G := a.HeadDim, p.group
	tiles := (a.QLen + p.bq - 1) / p.bq
	// Longer key blocks than the backward's: half the online-softmax rescales and calls (the
	// backward keeps 128, measured faster there).
	p.bk = 256
	heads := make([]headPanels, a.Batch*a.KVHeads)
	for h := range heads {
		heads[h].left.Store(int32(tiles))
	}
	gemm.Parallel(a.Batch*a.KVHeads*tiles, func(t int) {
		b, kh, i0 := t/(a.KVHeads*tiles), t/tiles%a.KVHeads, t%tiles*p.bq
		i1 := min(i0+p.bq, a.QLen)
		kvBase := b*a.KVLen*p.ld + kh*D
		hp := &heads[b*a.KVHeads+kh]
		hp.once.Do(func() {
			hp.kt = gemm.PackPanel(true, D, a.KVLen, k[kvBase:], p.ld)
			hp.v = gemm.PackPanel(false, a.KVLen, D, v[kvBase:], p.ld)
		})
		defer func() {
			if hp.left.Add(-1) == 0 {
				hp.kt.Release()
				hp.v.Release()
			}
		}()
		rows := (i1 - i0) * G
		bp := flashBuf(2*rows*D + rows*p.bk + 5*rows)
		defer flashBufs.Put(bp)
		buf := *bp
		qt, ot := buf[:rows*D], buf[rows*D:2*rows*D]
		s := buf[2*rows*D : 2*rows*D+rows*p.bk]
		stats := buf[2*rows*D+rows*p.bk:]
		// m, l: each row's running maximum and sum; shift, corr: a block's m_old − m_new and its
		// exponential (the rescale of the row's sum and output), one vector call for all rows;
		// sums: the block's own sums.
		m, l, shift, corr, sums := stats[:rows], stats[rows:2*rows], stats[2*rows:3*rows], stats[3*rows:4*rows], stats[4*rows:5*rows]
		p.gather(qt, q, b, kh, i0, i1)
		for r := range m {
			m[r] = float32(math.Inf(-1))
		}
		lo, hi := p.keyRange(b, i0, i1)
		lo &^= gemm.NR - 1 // blocks start on a panel strip; the keys before lo are masked
		for j0 := lo; j0 < hi; j0 += p.bk {
			n := min(p.bk, hi-j0)
			gemm.MulPanel(rows, a.Scale, qt, D, hp.kt, 0, D, j0, n, 0, s, n)
			p.online(s, rows, n, b, i0, j0, m, l, shift, corr, sums, ot)
			gemm.MulPanel(rows, 1, s, n, hp.v, j0, n, 0, D, 1, ot, D)
		}
		for r := 0; r < rows; r++ {
			i, h := i0+r/G, kh*G+r%G
			gemm.Scale(ot[r*D:(r+1)*D], 1/l[r])
			lse[(b*a.Heads+h)*a.QLen+i] = m[r] + float32(math.Log(float64(l[r])))
		}
		p.scatter(out, ot, b, kh, i0, i1)
	})
}

// online folds the score block s [rows, n] (keys j0..j0+n−1 of the tile of positions from i0)
// into the tile's online softmax: s becomes the block's exponentials exp(s − m_new) (zero for
// unseen keys), each row's output ot so far is rescaled to its new maximum, and m and l (each
// row's running maximum and sum) move on. shift, corr and sums are rows floats of scratch.
func (p *flashPlan) online(s []float32, rows, n, b, i0, j0 int, m, l, shift, corr, sums, ot []float32) {
	D := p.a.HeadDim
	for r := 0; r < rows; r++ {
		vl, vh := p.visible(b, i0+r/p.group)
		c0, c1 := max(vl-j0, 0), min(vh-j0, n)
		sr := s[r*n : (r+1)*n]
		if c0 >= c1 {
			clear(sr)
			shift[r], sums[r] = 0, 0
			continue
		}
		mn := max(m[r], gemm.Max(sr[c0:c1]))
		shift[r] = m[r] - mn // −∞ for the first block a row sees: no old sum to keep
		// The exponentials over whole vectors around [c0, c1), the unseen keys among them −∞
		// (so 0); zeros beyond.
		e0, e1 := c0&^15, min(n, (c1+15)&^15)
		for j := e0; j < c0; j++ {
			sr[j] = float32(math.Inf(-1))
		}
		for j := c1; j < e1; j++ {
			sr[j] = float32(math.Inf(-1))
		}
		sums[r] = gemm.ExpSub(sr[e0:e1], sr[e0:e1], mn)
		clear(sr[:e0])
		clear(sr[e1:])
		m[r] = mn
	}
	gemm.ExpSub(corr[:rows], shift[:rows], 0)
	for r := 0; r < rows; r++ {
		// The output rows so far, rescaled to the new maximum; none yet before a row's first
		// block (corr 0, the row still zero).
		if c := corr[r]; c != 1 && l[r] != 0 {
			gemm.Scale(ot[r*D:(r+1)*D], c)
		}
		l[r] = l[r]*corr[r] + sums[r]
	}
}

// flashProbs turns the score block s [rows, n] (keys j0..j0+n−1 of the tile of positions from i0)
// into probabilities exp(s − lse) of the keys each row sees, zero elsewhere, and returns whether
// any row sees any of them.
func (p *flashPlan) flashProbs(s, lseT []float32, rows, n, b, i0, j0 int) bool {
	seen := false
	for r := 0; r < rows; r++ {
		vl, vh := p.visible(b, i0+r/p.group)
		c0, c1 := max(vl-j0, 0), min(vh-j0, n)
		sr := s[r*n : (r+1)*n]
		if c0 >= c1 {
			clear(sr)
			continue
		}
		seen = true
		gemm.ExpSub(sr[c0:c1], sr[c0:c1], lseT[r])
		clear(sr[:c0])
		clear(sr[c1:])
	}
	return seen
}

// rowStats sets the log-sum-exp and Δ = dO·O of the gathered rows of positions from i0.
func (p *flashPlan) rowStats(lseT, delta, ot, dot, lse []float32, b, kh, i0, rows int) {
	a, D, G := p.a, p.a.HeadDim, p.group
	for r := 0; r < rows; r++ {
		i, h := i0+r/G, kh*G+r%G
		lseT[r] = lse[(b*a.Heads+h)*a.QLen+i]
		s := float32(0)
		for d := 0; d < D; d++ {
			s += dot[r*D+d] * ot[r*D+d]
		}
		delta[r] = s
	}
}

// dScores sets dS = P ⊙ (dP − Δ) in place of dP.
func dScores(ps, dp, delta []float32, rows, n int) {
	for r := 0; r < rows; r++ {
		pr, dr := ps[r*n:(r+1)*n], dp[r*n:(r+1)*n]
		dl := delta[r]
		for j := range dr {
			dr[j] = pr[j] * (dr[j] - dl)
		}
	}
}

// flashBackward is attention's backward pass. Every task writes only what it owns, so no sum
// depends on the split into tasks: one pass a (sequence, KV head) pair, key blocks outer and query
// tiles inner (dk and dv of a block summed while it is hot, dq summed over the blocks), where the
// pairs keep the cores busy (backwardByPairs); else two passes that split finer: dq a query tile
// at a time over the key blocks it sees, then dk and dv a key block at a time over the query tiles
// that see it. All recompute the probabilities from lse: P = exp(scale·q·k − lse),
// dS = P ⊙ (dO·vᵀ − Δ) with Δ_i = dO_i·O_i.
func flashBackward(a engine.Attention, dq, dk, dv, dout, q, k, v, out, lse []float32, starts []int32) {
	if backwardByPairs(a.Batch*a.KVHeads, runtime.GOMAXPROCS(0)) {
		flashBackwardPairs(a, dq, dk, dv, dout, q, k, v, out, lse, starts)
	} else {
		flashBackwardSplit(a, dq, dk, dv, dout, q, k, v, out, lse, starts)
	}
}

// backwardByPairs reports whether pairs (sequence, KV head) tasks, one a pair, keep threads cores
// busy enough to beat the two-pass split: over the rounds they take, at least three quarters of
// the cores' time used. The split computes the scores and dO·vᵀ twice: on one core of a Zen 5
// EPYC it took 1.2-1.4× the pairs' time on Llama-3.2-1B's heads and 1.35-1.85× on Qwen2-0.5B's
// (512 tokens, two rounds of go test -bench 'AttentionPaths/q=512/.*/bwd-(pairs|split)' -cpu 1).
// So Qwen2-0.5B's two KV heads on two cores now run as pairs: 10.2-10.6 ms against 12.5-14.9
// split, three rounds (-cpu 2).
func backwardByPairs(pairs, threads int) bool {
	rounds := (pairs + threads - 1) / threads
	return 4*pairs >= 3*rounds*threads
}

// flashBackwardPairs is the backward pass one (sequence, KV head) pair a task.
func flashBackwardPairs(a engine.Attention, dq, dk, dv, dout, q, k, v, out, lse []float32, starts []int32) {
	p := newFlashPlan(a, starts)
	D, G := a.HeadDim, p.group
	gemm.Parallel(a.Batch*a.KVHeads, func(t int) {
		b, kh := t/a.KVHeads, t%a.KVHeads
		all := a.QLen * G
		bp := flashBuf(4*all*D + 2*p.bk*D + 2*p.bq*G*p.bk + 2*all)
		defer flashBufs.Put(bp)
		buf := *bp
		qa, oa, doa, dqa := buf[:all*D], buf[all*D:2*all*D], buf[2*all*D:3*all*D], buf[3*all*D:4*all*D]
		rest := buf[4*all*D:]
		dkt, dvt := rest[:p.bk*D], rest[p.bk*D:2*p.bk*D]
		rest = rest[2*p.bk*D:]
		ps, dp := rest[:p.bq*G*p.bk], rest[p.bq*G*p.bk:2*p.bq*G*p.bk]
		lseA, deltaA := rest[2*p.bq*G*p.bk:2*p.bq*G*p.bk+all], rest[2*p.bq*G*p.bk+all:]
		p.gather(qa, q, b, kh, 0, a.QLen)
		p.gather(oa, out, b, kh, 0, a.QLen)
		p.gather(doa, dout, b, kh, 0, a.QLen)
		p.rowStats(lseA, deltaA, oa, doa, lse, b, kh, 0, all)
		kvBase := b*a.KVLen*p.ld + kh*D
		for j0 := 0; j0 < a.KVLen; j0 += p.bk {
			n := min(p.bk, a.KVLen-j0)
			kb, vb := k[kvBase+j0*p.ld:], v[kvBase+j0*p.ld:]
			clear(dkt)
			clear(dvt)
			for i0 := max(0, j0-p.off) / p.bq * p.bq; i0 < a.QLen; i0 += p.bq {
				i1 := min(i0+p.bq, a.QLen)
				rows, r0 := (i1-i0)*G, i0*G
				if lo, hi := p.keyRange(b, i0, i1); lo >= j0+n || hi <= j0 {
					continue
				}
				qt, dot := qa[r0*D:], doa[r0*D:]
				gemm.Sgemm(false, true, rows, n, D, a.Scale, qt, D, kb, p.ld, 0, ps, n)
				if !p.flashProbs(ps[:rows*n], lseA[r0:], rows, n, b, i0, j0) {
					continue
				}
				gemm.Sgemm(true, false, n, D, rows, 1, ps, n, dot, D, 1, dvt, D)
				gemm.Sgemm(false, true, rows, n, D, 1, dot, D, vb, p.ld, 0, dp, n)
				dScores(ps, dp, deltaA[r0:], rows, n)
				gemm.Sgemm(true, false, n, D, rows, a.Scale, dp, n, qt, D, 1, dkt, D)
				gemm.Sgemm(false, false, rows, D, n, a.Scale, dp, n, kb, p.ld, 1, dqa[r0*D:], D)
			}
			for j := 0; j < n; j++ {
				dst := kvBase + (j0+j)*p.ld
				copy(dk[dst:dst+D], dkt[j*D:(j+1)*D])
				copy(dv[dst:dst+D], dvt[j*D:(j+1)*D])
			}
		}
		p.scatter(dq, dqa, b, kh, 0, a.QLen)
	})
}

// flashBackwardSplit is the backward pass in two passes split a query tile and a key block a task.
func flashBackwardSplit(a engine.Attention, dq, dk, dv, dout, q, k, v, out, lse []float32, starts []int32) {
	p := newFlashPlan(a, starts)
	D, G := a.HeadDim, p.group
	tiles := (a.QLen + p.bq - 1) / p.bq
	// Pass 1: dq.
	gemm.Parallel(a.Batch*a.KVHeads*tiles, func(t int) {
		b, kh, i0 := t/(a.KVHeads*tiles), t/tiles%a.KVHeads, t%tiles*p.bq
		i1 := min(i0+p.bq, a.QLen)
		rows := (i1 - i0) * G
		bp := flashBuf(4*rows*D + 2*rows*p.bk + 2*rows)
		defer flashBufs.Put(bp)
		buf := *bp
		qt, ot, dot, dqt := buf[:rows*D], buf[rows*D:2*rows*D], buf[2*rows*D:3*rows*D], buf[3*rows*D:4*rows*D]
		rest := buf[4*rows*D:]
		ps, dp, lseT, delta := rest[:rows*p.bk], rest[rows*p.bk:2*rows*p.bk], rest[2*rows*p.bk:2*rows*p.bk+rows], rest[2*rows*p.bk+rows:]
		p.gather(qt, q, b, kh, i0, i1)
		p.gather(ot, out, b, kh, i0, i1)
		p.gather(dot, dout, b, kh, i0, i1)
		p.rowStats(lseT, delta, ot, dot, lse, b, kh, i0, rows)
		kvBase := b*a.KVLen*p.ld + kh*D
		lo, hi := p.keyRange(b, i0, i1)
		for j0 := lo; j0 < hi; j0 += p.bk {
			n := min(p.bk, hi-j0)
			gemm.Sgemm(false, true, rows, n, D, a.Scale, qt, D, k[kvBase+j0*p.ld:], p.ld, 0, ps, n)
			p.flashProbs(ps, lseT, rows, n, b, i0, j0)
			gemm.Sgemm(false, true, rows, n, D, 1, dot, D, v[kvBase+j0*p.ld:], p.ld, 0, dp, n)
			dScores(ps, dp, delta, rows, n)
			gemm.Sgemm(false, false, rows, D, n, a.Scale, dp, n, k[kvBase+j0*p.ld:], p.ld, 1, dqt, D)
		}
		p.scatter(dq, dqt, b, kh, i0, i1)
	})
	// Pass 2: dk and dv, a block of keys of one (sequence, KV head) a task.
	blocks := (a.KVLen + p.bk - 1) / p.bk
	gemm.Parallel(a.Batch*a.KVHeads*blocks, func(t int) {
		b, kh, j0 := t/(a.KVHeads*blocks), t/blocks%a.KVHeads, t%blocks*p.bk
		n := min(p.bk, a.KVLen-j0)
		maxRows := p.bq * G
		bp := flashBuf(2*n*D + 4*maxRows*D + 2*maxRows*n + 2*maxRows)
		defer flashBufs.Put(bp)
		buf := *bp
		dkt, dvt := buf[:n*D], buf[n*D:2*n*D]
		rest := buf[2*n*D:]
		qt, ot, dot := rest[:maxRows*D], rest[maxRows*D:2*maxRows*D], rest[2*maxRows*D:3*maxRows*D]
		rest = rest[4*maxRows*D:]
		ps, dp, lseT, delta := rest[:maxRows*n], rest[maxRows*n:2*maxRows*n], rest[2*maxRows*n:2*maxRows*n+maxRows], rest[2*maxRows*n+maxRows:]
		kvBase := b*a.KVLen*p.ld + kh*D
		kb, vb := k[kvBase+j0*p.ld:], v[kvBase+j0*p.ld:]
		// Queries at positions before j0 − off see none of these keys.
		first := max(0, j0-p.off) / p.bq * p.bq
		for i0 := first; i0 < a.QLen; i0 += p.bq {
			i1 := min(i0+p.bq, a.QLen)
			rows := (i1 - i0) * G
			if lo, hi := p.keyRange(b, i0, i1); lo >= j0+n || hi <= j0 {
				continue
			}
			p.gather(qt, q, b, kh, i0, i1)
			gemm.Sgemm(false, true, rows, n, D, a.Scale, qt, D, kb, p.ld, 0, ps, n)
			p.gather(ot, out, b, kh, i0, i1)
			p.gather(dot, dout, b, kh, i0, i1)
			p.rowStats(lseT, delta, ot, dot, lse, b, kh, i0, rows)
			if !p.flashProbs(ps[:rows*n], lseT, rows, n, b, i0, j0) {
				continue
			}
			// dV += Pᵀ·dO
			gemm.Sgemm(true, false, n, D, rows, 1, ps, n, dot, D, 1, dvt, D)
			gemm.Sgemm(false, true, rows, n, D, 1, dot, D, vb, p.ld, 0, dp, n)
			dScores(ps, dp, delta, rows, n)
			// dK += scale·dSᵀ·Q
			gemm.Sgemm(true, false, n, D, rows, a.Scale, dp, n, qt, D, 1, dkt, D)
		}
		for j := 0; j < n; j++ {
			dst := kvBase + (j0+j)*p.ld
			copy(dk[dst:dst+D], dkt[j*D:(j+1)*D])
			copy(dv[dst:dst+D], dvt[j*D:(j+1)*D])
		}
	})
}
