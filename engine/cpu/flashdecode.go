package cpu

import (
	"math"
	"runtime"
	"sync/atomic"

	"github.com/lathe-ml/lathe/engine/cpu/gemm"
)

// Decoding attention (a few queries a sequence against its cache) splits the keys rather than
// the heads, as FlashDecoding does on GPUs: one task takes a chunk of consecutive keys and every
// KV head, so it reads whole rows, and the chunks' partial softmaxes (each row's maximum, sum and
// unnormalised output) merge at the end. One task a KV head, which needs no merge, reads each
// cache row in slices of headDim floats, kvHeads·headDim apart, and measured slower from memory
// (Llama-3.2-1B's heads on two cores: 85 against 72 µs at 512 keys, 660 against 484 at 4096).
// So did prefetching the next block in software, whole rows or a share a head spread through
// the scores (the kernels ask for their next sixteen rows themselves), and visiting every head
// for each 16-key group so that the rows are read in order.

const (
	// decodeBlock is the keys a task scores before it folds them into its softmax. Longer blocks
	// mean fewer rescales and kernel calls: 32 to 256 keys, measured cold, ran fastest at 256
	// (a block's keys and values, 1 MiB for Llama-3.2-1B, within L2).
	decodeBlock = 256
	// decodeMinChunk is the fewest keys a task takes: below it, a task's set-up and the merge
	// cost more than the split gains.
	decodeMinChunk = 64
)

// decodeChunks is the keys each task of a decoding step takes (a multiple of 16) and the number of
// chunks a sequence's span keys split into: about one task a thread over all sequences (two a
// thread measured slower), none shorter than decodeMinChunk.
func decodeChunks(span, batch int) (chunk, n int) {
	per := max(1, (runtime.GOMAXPROCS(0)+batch-1)/batch)
	chunk = max(decodeMinChunk, ((span+per-1)/per+15)&^15)
	return chunk, max(1, (span+chunk-1)/chunk)
}

// flashDecode is attention's forward pass for a decoding step (p.decoding: at most 16 query rows
// a KV head); one task a (sequence, key chunk).
func flashDecode(p flashPlan, out, lse, q, k, v []float32) {
	a := p.a
	D, KH, H := a.HeadDim, a.KVHeads, a.Heads
	rows := a.QLen * p.group // a KV head's query rows
	span := 0
	for b := 0; b < a.Batch; b++ {
		lo, hi := p.keyRange(b, 0, a.QLen)
		span = max(span, hi-lo)
	}
	chunk, nc := decodeChunks(span, a.Batch)
	// A chunk's result for KV head kh: rp·D output floats (unnormalised), then each row's maximum
	// and sum. The value products run on rp ≥ rows rows, which spares gemm.AttendValues a padded
	// copy: the extra rows' weights (whatever s holds there) and outputs are never used.
	rp := gemm.AttendValuesRows(rows, D)
	om, ol := rp*D, rp*D+rows // the maxima's and sums' offsets
	per := rp*D + 2*rows
	pp := flashBuf(a.Batch * nc * KH * per)
	defer flashBufs.Put(pp)
	parts := *pp
	// chunkTask runs chunk t%nc of sequence t/nc against every KV head, its partial softmaxes
	// left in parts.
	chunkTask := func(t int) {
		b, c := t/nc, t%nc
		lo, hi := p.keyRange(b, 0, a.QLen)
		j0, j1 := lo+c*chunk, min(hi, lo+(c+1)*chunk)
		res := parts[t*KH*per : (t+1)*KH*per]
		for kh := 0; kh < KH; kh++ {
			m := res[kh*per+om : kh*per+ol]
			for r := range m {
				m[r] = float32(math.Inf(-1))
			}
		}
		if j0 >= j1 {
			return // sums 0: the merge skips this chunk
		}
		bp := flashBuf(KH*rows*D + rp*decodeBlock + 3*rows)
		defer flashBufs.Put(bp)
		buf := *bp
		qt, s := buf[:KH*rows*D], buf[KH*rows*D:KH*rows*D+rp*decodeBlock]
		shift, corr, sums := buf[len(buf)-3*rows:len(buf)-2*rows], buf[len(buf)-2*rows:len(buf)-rows], buf[len(buf)-rows:]
		for kh := 0; kh < KH; kh++ {
			p.gather(qt[kh*rows*D:(kh+1)*rows*D], q, b, kh, 0, a.QLen)
		}
		base := b * a.KVLen * p.ld
		for jb := j0; jb < j1; jb += decodeBlock {
			n := min(decodeBlock, j1-jb)
			for kh := 0; kh < KH; kh++ {
				r := res[kh*per : (kh+1)*per]
				ot, m, l := r[:om], r[om:ol], r[ol:]
				off := base + jb*p.ld + kh*D
				gemm.AttendScores(rows, n, D, a.Scale, qt[kh*rows*D:(kh+1)*rows*D], k[off:], p.ld, s, n)
				p.online(s[:rows*n], rows, n, b, 0, jb, m, l, shift, corr, sums, ot)
				gemm.AttendValues(rp, n, D, s, n, v[off:], p.ld, ot, D)
			}
		}
	}
	// The merge: each row's output is Σ_c e^(m_c−M)·o_c / Σ_c e^(m_c−M)·l_c over the chunks c,
	// M the largest of their maxima. The last chunk of a sequence to finish merges it (every KV
	// head), so that a step is one parallel phase: a second one cost about 1.5 µs on two cores, a
	// tenth of Qwen2-0.5B's step.
	merge := func(b int) {
		bp := flashBuf(rows*D + rows)
		defer flashBufs.Put(bp)
		ot, wl := (*bp)[:rows*D], (*bp)[rows*D:]
		for kh := 0; kh < KH; kh++ {
			clear(ot)
			for r := 0; r < rows; r++ {
				mx := float32(math.Inf(-1))
				for c := 0; c < nc; c++ {
					res := parts[((b*nc+c)*KH+kh)*per:]
					if res[ol+r] > 0 {
						mx = max(mx, res[om+r])
					}
				}
				sum := float32(0)
				o := ot[r*D : (r+1)*D]
				for c := 0; c < nc; c++ {
					res := parts[((b*nc+c)*KH+kh)*per:]
					l := res[ol+r]
					if l <= 0 {
						continue
					}
					w := float32(math.Exp(float64(res[om+r] - mx)))
					sum += w * l
					gemm.AddScaled(o, res[r*D:], w)
				}
				gemm.Scale(o, 1/sum)
				wl[r] = mx + float32(math.Log(float64(sum)))
			}
			for r := 0; r < rows; r++ {
				i, h := r/p.group, kh*p.group+r%p.group
				lse[(b*H+h)*a.QLen+i] = wl[r]
			}
			p.scatter(out, ot, b, kh, 0, a.QLen)
		}
	}
	left := make([]atomic.Int32, a.Batch) // each sequence's chunks still running
	for b := range left {
		left[b].Store(int32(nc))
	}
	gemm.Parallel(a.Batch*nc, func(t int) {
		chunkTask(t)
		if b := t / nc; left[b].Add(-1) == 0 {
			merge(b)
		}
	})
}
