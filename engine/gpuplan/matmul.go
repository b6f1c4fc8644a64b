package gpuplan

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/shaders"
)

// mm describes one tiled GEMM: c = alpha·op(a)·op(b) [+ lscale·xa·blᵀ] [+ c]. With quant, b is a
// 4-bit weight [quant.N, quant.K] and op(b)(k, n) is W[n, k] (transB) or W[k, n].
type mm struct {
	transA, transB bool
	m, n, k        int
	a, b, c        Ref
	lda, ldb, ldc  int
	alpha          float32
	acc            bool // add to c instead of overwriting it
	// bh is b's storage when it is a frozen 16-bit weight: 0 f32, 1 f16, 2 bf16 (dtypeCode).
	bh int

	quant  *engine.QuantSpec
	absmax Ref

	// LoRA epilogue: c[i, j] += lscale·Σ_r xa[i, r]·bl(j, r); bl(j, r) = bl[j·ldbl + r], or
	// bl[r·ldbl + j] with epiT.
	epi        bool
	epiT       bool
	xa, bl     Ref
	rank       int
	lscale     float32
	ldxa, ldbl int
}

// mmParams packs the uniform block shared by matmul.wgsl and qgemv.wgsl.
func (g *mm) params() *Params {
	p := new(Params).U(g.m, g.n, g.k, g.lda, g.ldb, g.ldc).F(g.alpha)
	kq, bs := 0, 0
	var code []float32
	if g.quant != nil {
		c := g.quant.Code()
		kq, bs, code = g.quant.K, g.quant.Blocksize, c[:]
	}
	p.U(kq, bs, g.rank).F(g.lscale).U(g.ldxa, g.ldbl)
	return p.Vec4s(code, 16)
}

func (q *planner) fillDummies(g *mm) error {
	for _, p := range []*Ref{&g.absmax, &g.xa, &g.bl} {
		if p.Kind == None {
			d := q.dummy()
			*p = d
		}
	}
	return nil
}

// matmul records a tiled GEMM (matmul.wgsl), or a GEMV (gemv.wgsl) for one dense row.
func (q *planner) matmul(g mm) error {
	if g.m == 0 || g.n == 0 {
		return nil
	}
	if err := q.fillDummies(&g); err != nil {
		return err
	}
	if g.m == 1 && g.quant == nil && !g.acc && !g.epiT {
		return q.gemv(g)
	}
	grid, err := GroupsFor(CeilDiv(g.m, TileM)*CeilDiv(g.n, TileN), q.d.maxGroups())
	if err != nil {
		return err
	}
	consts := []shaders.Const{c("WG", WG), c("BM", TileM), c("BN", TileN), c("BK", TileK), c("TM", ThreadsM), c("TN", ThreadsN),
		c("ASZ", TileK*TileM), c("BSZ", TileK*TileN), c("TMN", ThreadsM*ThreadsN),
		c("TA", g.transA), c("TB", g.transB), c("BQ", g.quant != nil), c("EPI", g.epi), c("EPIT", g.epiT), c("ACC", g.acc), c("BH", g.bh), c(shaders.F16Const, q.d.F16)}
	g.a.RW, g.b.RW, g.absmax.RW, g.xa.RW, g.bl.RW, g.c.RW = false, false, false, false, false, true
	q.dispatch("matmul", consts, grid, g.params(), g.a, g.b, g.absmax, g.xa, g.bl, g.c)
	return nil
}

// gemv records c = alpha·a·op(b) [+ LoRA term] for a single dense row a.
func (q *planner) gemv(g mm) error {
	g.lda = 1
	if g.transA {
		g.lda = g.m // a is [k, 1]: element k at k·m
	}
	var grid [3]uint32
	var err error
	if g.transB {
		grid, err = GroupsFor(g.n, q.d.maxGroups())
	} else {
		grid, err = q.items(g.n, WG)
	}
	if err != nil {
		return err
	}
	g.a.RW, g.b.RW, g.xa.RW, g.bl.RW, g.c.RW = false, false, false, false, true
	q.dispatch("gemv", []shaders.Const{c("WG", WG), c("TB", g.transB), c("EPI", g.epi), c("BH", g.bh)}, grid, g.params(), g.a, g.b, g.xa, g.bl, g.c)
	return nil
}

// qgemv records y = x·Wᵀ for one row of x against a 4-bit W (qgemv.wgsl): one workgroup per
// output, each packed word read once. Where the device has subgroups, its subgroup variant reduces
// across K with them.
func (q *planner) qgemv(g mm) error {
	if err := q.fillDummies(&g); err != nil {
		return err
	}
	grid, err := GroupsFor(g.n, q.d.maxGroups())
	if err != nil {
		return err
	}
	g.a.RW, g.b.RW, g.absmax.RW, g.xa.RW, g.bl.RW, g.c.RW = false, false, false, false, false, true
	q.dispatch("qgemv", []shaders.Const{c("WG", WG), c("EPI", g.epi)}, grid, g.params(), g.a, g.b, g.absmax, g.xa, g.bl, g.c)
	return nil
}

// qmatmul: y = x·Wᵀ (or x·W with transW) for x of rows rows; epi, when set, adds a LoRA term.
func (q *planner) qmatmul(qs *engine.QuantSpec, transW bool, rows int, x, packed, absmax, y Ref, epi *mm) error {
	g := mm{m: rows, a: x, b: packed, absmax: absmax, c: y, alpha: 1, quant: qs}
	if transW {
		g.n, g.k, g.lda, g.ldb, g.ldc = qs.K, qs.N, qs.N, qs.K, qs.K
	} else {
		g.transB = true
		g.n, g.k, g.lda, g.ldb, g.ldc = qs.N, qs.K, qs.K, qs.K, qs.N
	}
	if epi != nil {
		g.epi, g.epiT, g.xa, g.bl, g.rank, g.lscale, g.ldxa, g.ldbl = true, epi.epiT, epi.xa, epi.bl, epi.rank, epi.lscale, epi.ldxa, epi.ldbl
	}
	if rows == 1 && !transW {
		return q.qgemv(g)
	}
	return q.matmul(g)
}

// lora: xa = d(x)·Aᵀ first (small; d the dropout, into a scratch copy of x), then one GEMM pass
// over W whose epilogue adds s·xa·Bᵀ, so x·Wᵀ and the LoRA term are never written as separate
// outputs.
func (q *planner) lora(op engine.LoRA, l engine.Launch, in, out []Ref) error {
	rows, din, dout, rank := op.Dims(metas(l.In))
	nw, _ := op.Operands()
	a, bl := in[1+nw], in[2+nw]
	x, y, xa := in[0], out[0], out[1]
	xd, err := q.loraDropout(op, in, x, rows*din)
	if err != nil {
		return err
	}
	if err := q.matmul(mm{transB: true, m: rows, n: rank, k: din, a: xd, lda: din, b: a, ldb: din, c: xa, ldc: rank, alpha: 1}); err != nil {
		return err
	}
	xr := xa
	xr.RW = false
	epi := mm{epi: true, xa: xr, bl: bl, rank: rank, lscale: op.Scale, ldxa: rank, ldbl: rank}
	if op.Quant != nil {
		return q.qmatmul(op.Quant, false, rows, x, in[1], in[2], y, &epi)
	}
	g := mm{transB: true, m: rows, n: dout, k: din, a: x, lda: din, b: in[1], ldb: din, c: y, ldc: dout, alpha: 1, bh: dtypeCode(l.In[1].Meta.DType)}
	g.epi, g.xa, g.bl, g.rank, g.lscale, g.ldxa, g.ldbl = true, xr, bl, rank, op.Scale, rank, rank
	return q.matmul(g)
}

// loraDropout returns x with the LoRA op's dropout applied, in a scratch buffer, or x itself
// without dropout. fwd are the forward operands' bindings.
func (q *planner) loraDropout(op engine.LoRA, fwd []Ref, x Ref, n int) (Ref, error) {
	nw, ns := op.Operands()
	if ns == 0 {
		return x, nil
	}
	t := q.temp(int64(4 * n))
	if err := q.dropout(x, fwd[3+nw], t, n, op.Dropout, op.Salt); err != nil {
		return Ref{}, err
	}
	t.RW = false
	return t, nil
}

// matmul16 records y = x·Wᵀ (or x·W with transW) for a frozen 16-bit W [n, k] (MatMul16): the
// tiled GEMM or the GEMV, widening W exactly as it is read.
func (q *planner) matmul16(transW bool, rows int, w engine.Meta, x, wb, y Ref) error {
	nw, kw := w.Shape[0], w.Shape[1]
	g := mm{m: rows, a: x, b: wb, c: y, alpha: 1, ldb: kw, bh: dtypeCode(w.DType)}
	if transW {
		g.n, g.k = kw, nw
	} else {
		g.transB = true
		g.n, g.k = nw, kw
	}
	g.lda, g.ldc = g.k, g.n
	return q.matmul(g)
}

// dropout records y = dropout(x) under the seed binding (dropout.wgsl).
func (q *planner) dropout(x, seed, y Ref, n int, p float32, salt uint32) error {
	g, err := q.items(n, WG)
	if err != nil {
		return err
	}
	q.dispatch("dropout", []shaders.Const{c("WG", WG)}, g, new(Params).U(n).F(p, 1/(1-p)).U(int(salt)), x, seed, y)
	return nil
}

// gatherLoRA: t = A_s·x on each row, s its pool slot (gather_lora_a.wgsl), then out = y + B_s·t
// (gather_lora_b.wgsl): two dispatches whatever the mix of adapters.
func (q *planner) gatherLoRA(op engine.GatherLoRA, l engine.Launch, in, out []Ref) error {
	rc := GatherRows
	n, din, dout, slots := op.Dims(metas(l.In))
	t := q.temp(int64(4 * n * op.R))
	chunks := CeilDiv(n, rc)
	consts := []shaders.Const{c("WG", WG), c("RC", rc)}
	g, err := GroupsFor(op.R*chunks, q.d.maxGroups())
	if err != nil {
		return err
	}
	q.dispatch("gather_lora_a", consts, g, new(Params).U(n, din, op.R).I(int32(slots)), in[1], in[2], in[3], t, q.fault())
	t.RW = false
	if g, err = GroupsFor(CeilDiv(dout, WG)*chunks, q.d.maxGroups()); err != nil {
		return err
	}
	q.dispatch("gather_lora_b", consts, g, new(Params).U(n, dout, op.R).I(int32(slots)), in[0], in[2], t, in[4], out[0])
	return nil
}

// loraBackward: t = dy·B; dx = dy·W + s·t·A (one GEMM with the LoRA term in its epilogue; with
// dropout, dy·W plus the dropped-out s·t·A); dA = s·tᵀ·d(x); dB = s·dyᵀ·xa. Every reduction is a
// tiled f32 GEMM: deterministic, no atomics.
func (q *planner) loraBackward(op engine.LoRABackward, l engine.Launch, in, out []Ref) error {
	fop := op.Forward()
	rows, din, dout, rank := fop.Dims(metas(l.In[1 : len(l.In)-1]))
	nw, _ := fop.Operands()
	fwd := in[1 : len(in)-1]
	dy, x, xa := in[0], fwd[0], in[len(in)-1]
	a, bl := fwd[1+nw], fwd[2+nw]
	s := op.Scale
	k := 0
	next := func() Ref { o := out[k]; k++; return o }
	var dx, dA, dB Ref
	if op.NeedX {
		dx = next()
	}
	if op.NeedA {
		dA = next()
	}
	if op.NeedB {
		dB = next()
	}
	if k != len(out) {
		return fmt.Errorf("want %d outputs, got %d", k, len(out))
	}
	if op.NeedX || op.NeedA {
		t := q.temp(int64(4 * rows * rank))
		if err := q.matmul(mm{m: rows, n: rank, k: dout, a: dy, lda: dout, b: bl, ldb: rank, c: t, ldc: rank, alpha: 1}); err != nil {
			return err
		}
		t.RW = false
		if op.NeedX {
			if err := q.loraDx(op, fwd, dtypeCode(l.In[2].Meta.DType), dy, t, a, dx, rows, din, dout, rank); err != nil {
				return err
			}
		}
		if op.NeedA {
			xd, err := q.loraDropout(fop, fwd, x, rows*din)
			if err != nil {
				return err
			}
			if err := q.matmul(mm{transA: true, m: rank, n: din, k: rows, a: t, lda: rank, b: xd, ldb: din, c: dA, ldc: din, alpha: s}); err != nil {
				return err
			}
		}
	}
	if op.NeedB {
		return q.matmul(mm{transA: true, m: dout, n: rank, k: rows, a: dy, lda: dout, b: xa, ldb: rank, c: dB, ldc: rank, alpha: s})
	}
	return nil
}

// loraDx records dx = dy·W + s·d(t·A): without dropout one GEMM over W with the LoRA term in its
// epilogue; with it, the two terms apart and summed. bh is a dense W's storage (dtypeCode).
func (q *planner) loraDx(op engine.LoRABackward, fwd []Ref, bh int, dy, t, a, dx Ref, rows, din, dout, rank int) error {
	s := op.Scale
	base := dx
	if op.Dropout > 0 {
		tmp := q.temp(int64(4 * rows * din))
		base = tmp
	}
	var epi *mm
	if op.Dropout == 0 {
		epi = &mm{epi: true, epiT: true, xa: t, bl: a, rank: rank, lscale: s, ldxa: rank, ldbl: din}
	}
	if op.Quant != nil {
		if err := q.qmatmul(op.Quant, true, rows, dy, fwd[1], fwd[2], base, epi); err != nil {
			return err
		}
	} else {
		g := mm{m: rows, n: din, k: dout, a: dy, lda: dout, b: fwd[1], ldb: din, c: base, ldc: din, alpha: 1, bh: bh}
		if epi != nil {
			g.epi, g.epiT, g.xa, g.bl, g.rank, g.lscale, g.ldxa, g.ldbl = true, true, t, a, rank, s, rank, din
		}
		if err := q.matmul(g); err != nil {
			return err
		}
	}
	if op.Dropout == 0 {
		return nil
	}
	u := q.temp(int64(4 * rows * din))
	if err := q.matmul(mm{m: rows, n: din, k: rank, a: t, lda: rank, b: a, ldb: din, c: u, ldc: din, alpha: s}); err != nil {
		return err
	}
	u.RW = false
	ud := q.temp(int64(4 * rows * din))
	nw, _ := op.Forward().Operands()
	if err := q.dropout(u, fwd[3+nw], ud, rows*din, op.Dropout, op.Salt); err != nil {
		return err
	}
	ud.RW, base.RW = false, false
	return q.map2(0, base, ud, dx, rows*din, 1)
}

// attention: one kernel family over contiguous keys or a KV cache of slots (constant ROWS, from
// KVStride; the same parameter block and bindings): the tiled online-softmax kernel, WG queries a
// workgroup, KT keys a tile, as many as the device's workgroup memory holds (K and V tiles) up to
// 64; for few queries (decoding) attention_query, a workgroup per query and head, so that every
// invocation is busy on the keys. kvRows is the number of rows of k and v.
func (q *planner) attention(op engine.Attention, kvRows int, in, out []Ref) error {
	const queries = 64
	rows := op.KVStride > 0
	docs := 0
	if op.Docs {
		docs = 1
	}
	p := new(Params).U(op.Batch, op.QLen, op.KVLen, op.Heads, op.KVHeads, op.KVStride, kvRows).F(op.Scale).U(docs)
	idx := startsBind(op, in, 3) // the document starts, or the cache rows
	if rows {
		idx = in[3]
	}
	if op.QLen <= DecodeQueries || (rows && q.d.PerQueryRows) {
		const threads = 64
		grid, err := GroupsFor(op.Batch*op.Heads*op.QLen, q.d.maxGroups())
		if err != nil {
			return err
		}
		consts := []shaders.Const{c("WG", threads), c("HD", op.HeadDim), c("DPT", CeilDiv(op.HeadDim, threads)), c("ROWS", rows)}
		q.dispatch("attention_query", consts, grid, p, in[0], in[1], in[2], idx, out[0], out[1])
		return nil
	}
	grid, err := GroupsFor(op.Batch*op.Heads*CeilDiv(op.QLen, queries), q.d.maxGroups())
	if err != nil {
		return err
	}
	kt := q.d.keyTile(op.HeadDim, queries)
	consts := []shaders.Const{c("WG", queries), c("HD", op.HeadDim), c("KT", kt), c("KTHD", kt*op.HeadDim), c("ROWS", rows)}
	q.dispatch("attention", consts, grid, p, in[0], in[1], in[2], idx, out[0], out[1])
	return nil
}

// attnParams packs the uniform block of the backward kernels (contiguous k and v, KVLen rows a
// sequence), Docs last.
func attnParams(op engine.Attention) *Params {
	docs := 0
	if op.Docs {
		docs = 1
	}
	return new(Params).U(op.Batch, op.QLen, op.KVLen, op.Heads, op.KVHeads, op.HeadDim).F(op.Scale).U(docs)
}

// startsBind is the document starts operand in[i] with Docs; without, the kernels read none and
// q (in[0], read-only too) fills the binding.
func startsBind(op engine.Attention, in []Ref, i int) Ref {
	if op.Docs {
		return in[i]
	}
	return in[0]
}

// attentionBackward: dq (and D = rowsum(dout·out)) per query, then dk and dv per key, summing over
// the heads of its group and the queries that see it, in a fixed order.
func (q *planner) attentionBackward(op engine.AttentionBackward, in, out []Ref) error {
	a := op.Attention
	k := 0
	o := [3]Ref{}
	sizes := [3]int{a.Batch * a.QLen * a.Heads * a.HeadDim, a.Batch * a.KVLen * a.KVHeads * a.HeadDim, a.Batch * a.KVLen * a.KVHeads * a.HeadDim}
	for i, need := range []bool{op.NeedQ, op.NeedK, op.NeedV} {
		if need {
			o[i] = out[k]
			k++
			continue
		}
		t := q.temp(int64(4 * sizes[i]))
		o[i] = t
	}
	dvec := q.temp(int64(4 * a.Batch * a.Heads * a.QLen))
	const block = 64
	kt := q.d.keyTile(a.HeadDim, block)
	grid, err := GroupsFor(a.Batch*a.Heads*CeilDiv(a.QLen, block), q.d.maxGroups())
	if err != nil {
		return err
	}
	consts := []shaders.Const{c("WG", block), c("HD", a.HeadDim), c("KT", kt), c("KTHD", kt*a.HeadDim)}
	starts := startsBind(a, in, 6)
	q.dispatch("attn_bwd_dq", consts, grid, attnParams(a), in[0], in[1], in[2], in[3], in[4], in[5], o[0], dvec, starts)
	dvec.RW = false
	// Query tiles hold q and dout rows plus lse, D and the document start: 2·hd + 3 words a query.
	qt := (int(q.d.WorkgroupStorage) - 4*block) / (4 * (2*a.HeadDim + 3))
	qt = max(1, min(qt, 64))
	grid, err = GroupsFor(a.Batch*a.KVHeads*CeilDiv(a.KVLen, block), q.d.maxGroups())
	if err != nil {
		return err
	}
	consts = []shaders.Const{c("WG", block), c("HD", a.HeadDim), c("QT", qt), c("QTHD", qt*a.HeadDim)}
	q.dispatch("attn_bwd_dkv", consts, grid, attnParams(a), in[0], in[1], in[2], in[3], in[5], dvec, o[1], o[2], starts)
	return nil
}
