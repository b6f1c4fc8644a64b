package webgpu

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
)

// openTest opens the best adapter. Without one the test skips, unless LATHE_REQUIRE_GPU=1, when it
// fails: CI sets it where lavapipe is installed.
func openTest(t testing.TB) *Backend {
	t.Helper()
	b, err := OpenBest()
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1: %v", err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("adapter: %s (%s, %s, %s)", b.info.Name, b.info.Type, b.info.API, b.info.Driver)
	return b
}

func TestConformance(t *testing.T) {
	b := openTest(t)
	enginetest.Run(t, b, cpu.New())
}

func TestGroupsFor(t *testing.T) {
	for _, c := range []struct {
		groups int
		max    uint32
		want   [3]uint32
		err    bool
	}{
		{0, 65535, [3]uint32{0, 1, 1}, false},
		{1, 65535, [3]uint32{1, 1, 1}, false},
		{65535, 65535, [3]uint32{65535, 1, 1}, false},
		{65536, 65535, [3]uint32{32768, 2, 1}, false},
		{10, 4, [3]uint32{4, 3, 1}, false},
		{17, 4, [3]uint32{0, 0, 0}, true},
	} {
		got, err := groupsFor(c.groups, c.max)
		if (err != nil) != c.err {
			t.Errorf("groupsFor(%d, %d): error %v", c.groups, c.max, err)
			continue
		}
		if c.err {
			continue
		}
		if got != c.want {
			t.Errorf("groupsFor(%d, %d) = %v, want %v", c.groups, c.max, got, c.want)
		}
		if n := int(got[0]) * int(got[1]); n < c.groups || (c.groups > 0 && n-c.groups >= int(got[0])) {
			t.Errorf("groupsFor(%d, %d) = %v covers %d workgroups", c.groups, c.max, got, n)
		}
	}
	if ceilDiv(37, 16) != 3 || ceilDiv(32, 16) != 2 {
		t.Error("ceilDiv")
	}
}

func TestSizeClass(t *testing.T) {
	prev := int64(0)
	for n := int64(1); n < 1<<22; n = n*3/2 + 1 {
		c := sizeClass(n)
		if c < n || c > n+n/4+256 {
			t.Fatalf("sizeClass(%d) = %d", n, c)
		}
		if c < prev {
			t.Fatalf("sizeClass not monotone at %d", n)
		}
		prev = c
	}
	if sizeClass(1000) != sizeClass(1020) {
		t.Error("nearby sizes should share a class")
	}
}

func TestParams(t *testing.T) {
	p := new(params).u(1, 2, 3, 4).f(5).vec4s([]float32{1, 2, 3}, 8)
	b := p.bytes()
	if len(b) != 4*16 {
		t.Fatalf("params are %d bytes, want 64 (5 scalars padded to 8 words, then 8 floats)", len(b))
	}
}

func TestRoundTripOddSizes(t *testing.T) {
	b := openTest(t)
	for _, n := range []int{1, 2, 3, 5, 7, 13, 1001} {
		buf, err := b.Alloc(int64(n))
		if err != nil {
			t.Fatal(err)
		}
		if buf.Bytes() < int64(n) {
			t.Fatalf("alloc %d: %d bytes", n, buf.Bytes())
		}
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(7*i + n)
		}
		if err := b.Write(buf, 0, src); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		if err := b.Read(buf, 0, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, src) {
			t.Fatalf("round trip of %d bytes: got %v, want %v", n, got, src)
		}
		// An unaligned write in the middle keeps its neighbours.
		if n >= 3 {
			if err := b.Write(buf, 1, []byte{0xAB}); err != nil {
				t.Fatal(err)
			}
			src[1] = 0xAB
			if err := b.Read(buf, 0, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, src) {
				t.Fatalf("partial write into %d bytes: got %v, want %v", n, got, src)
			}
			part := make([]byte, 2)
			if err := b.Read(buf, 1, part); err != nil || part[0] != src[1] || part[1] != src[2] {
				t.Fatalf("unaligned read: %v %v", part, err)
			}
		}
		b.Free(buf)
	}
}

func TestPoolReuse(t *testing.T) {
	b := openTest(t)
	x, err := b.Alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	wx := x.(*buffer).buf
	b.Free(x)
	if b.PooledBytes() == 0 {
		t.Fatal("freed buffer not pooled")
	}
	y, err := b.Alloc(1010) // same size class
	if err != nil {
		t.Fatal(err)
	}
	if y.(*buffer).buf != wx {
		t.Error("a freed buffer of the same size class was not reused")
	}
	if b.PooledBytes() != 0 {
		t.Errorf("pool holds %d bytes after reuse", b.PooledBytes())
	}
	z, err := b.Alloc(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if z.(*buffer).buf == wx {
		t.Error("a live buffer was handed out twice")
	}
	b.Free(y)
	b.Free(z)
}

func TestErrors(t *testing.T) {
	b := openTest(t)
	type unknownOp struct{ engine.Fill }
	if err := b.Supports(unknownOp{engine.Fill{Shape: engine.Shape{2}, Value: 1}}, nil); err == nil {
		t.Error("Supports accepted an op it has no kernel for")
	}
	if err := b.Supports(engine.Unary{Fn: 99}, []engine.Meta{{Shape: engine.Shape{4}, DType: engine.F32}}); err == nil {
		t.Error("Supports accepted an unknown unary function")
	}
	a := engine.Attention{Batch: 1, QLen: 1, KVLen: 1, Heads: 1, KVHeads: 1, HeadDim: 1024, Scale: 1}
	m := []engine.Meta{{Shape: engine.Shape{1, 1024}, DType: engine.F32}, {Shape: engine.Shape{1, 1024}, DType: engine.F32}, {Shape: engine.Shape{1, 1024}, DType: engine.F32}}
	if err := b.Supports(a, m); err == nil {
		t.Error("Supports accepted a head dim beyond the kernel's")
	}
	if _, err := b.Alloc(int64(b.limits.MaxBufferSize) + 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize alloc: %v", err)
	}
	x, err := b.Alloc(16)
	if err != nil {
		t.Fatal(err)
	}
	b.Free(x)
	if err := b.Read(x, 0, make([]byte, 4)); !errors.Is(err, ErrFreed) {
		t.Errorf("read after free: %v", err)
	}
	y, _ := b.Alloc(8)
	if err := b.Read(y, 4, make([]byte, 8)); err == nil {
		t.Error("read past the end succeeded")
	}
	if err := b.Write(y, -1, []byte{1}); err == nil {
		t.Error("write at a negative offset succeeded")
	}
	b.Free(y)
}

func TestDevices(t *testing.T) {
	devs, err := Provider{}.Devices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.Backend != "webgpu" || d.Name == "" || d.Vendor == "" || d.Type == "" || d.API == "" {
			t.Errorf("incomplete device info: %+v", d)
		}
		t.Logf("%d: %s, %s, %s, %s, %s", d.Index, d.Name, d.Vendor, d.Type, d.API, d.Driver)
	}
	if _, err := (Provider{}).Open(len(devs)); err == nil {
		t.Error("opened an adapter index past the end")
	}
	// The listing holds at least what the machine has: under LATHE_REQUIRE_GPU=1 an adapter, and
	// where Mesa's lavapipe driver is installed (CI), its llvmpipe device.
	if os.Getenv("LATHE_REQUIRE_GPU") == "1" && len(devs) == 0 {
		t.Fatal("LATHE_REQUIRE_GPU=1 but no WebGPU adapter is listed")
	}
	if icds, _ := filepath.Glob("/usr/share/vulkan/icd.d/lvp_icd*.json"); len(icds) > 0 {
		found := false
		for _, d := range devs {
			found = found || strings.Contains(strings.ToLower(d.Name), "llvmpipe")
		}
		if !found {
			t.Errorf("lavapipe is installed (%s) but no llvmpipe adapter is listed: %+v", icds[0], devs)
		}
	}
}

// TestAdamWInPlace runs the optimizer's form of AdamW (outputs are the operands' buffers, which the
// kernel must bind once) against the CPU backend.
func TestAdamWInPlace(t *testing.T) {
	b := openTest(t)
	ref := cpu.New()
	const n = 301
	op := engine.AdamW{Step: 5, LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}
	meta := engine.Meta{Shape: engine.Shape{n}, DType: engine.F32}
	vals := make([][]float32, 4)
	for k := range vals {
		vals[k] = make([]float32, n)
		for i := range vals[k] {
			vals[k][i] = float32((i*(k+3))%17)/17 - 0.3
			if k == 3 {
				vals[k][i] = float32(i%5+1) * 1e-3 // v > 0
			}
		}
	}
	res := make([][][]float32, 2)
	for bi, be := range []engine.Backend{b, ref} {
		ts := make([]*engine.Tensor, 4)
		args := make([]engine.Arg, 4)
		for k := range ts {
			x, err := engine.FromFloat32(be, meta.Shape, vals[k])
			if err != nil {
				t.Fatal(err)
			}
			defer x.Release()
			ts[k] = x
			args[k] = engine.Arg{Buf: x.Buffer(), Meta: meta}
		}
		if err := be.Supports(op, []engine.Meta{meta, meta, meta, meta}); err != nil {
			t.Fatal(err)
		}
		if err := be.Run([]engine.Launch{{Op: op, In: args, Out: []engine.Arg{args[0], args[2], args[3]}}}); err != nil {
			t.Fatal(err)
		}
		for _, k := range []int{0, 2, 3} {
			v, err := ts[k].Float32()
			if err != nil {
				t.Fatal(err)
			}
			res[bi] = append(res[bi], v)
		}
	}
	for k := range res[0] {
		for i := range res[0][k] {
			if d := res[0][k][i] - res[1][k][i]; d > 1e-6 || d < -1e-6 {
				t.Fatalf("output %d[%d]: webgpu %v, cpu %v", k, i, res[0][k][i], res[1][k][i])
			}
		}
	}
}

// TestMultiTile checks shapes that span several tiles of the tiled kernels (the conformance
// shapes fit in one): matmul over 3×2 tiles and 7 k-slices, attention over two query blocks and
// three key tiles, attention over a KV cache and GatherLoRA over several chunks, a 4-bit GEMV over
// rows that straddle packed words.
func TestMultiTile(t *testing.T) {
	b := openTest(t)
	ref := cpu.New()
	randn := func(r *rand.Rand, n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * s)
		}
		return v
	}
	in := func(g *engine.Graph, leaves *[]enginetest.Leaf, r *rand.Rand, shape engine.Shape, s float64) *engine.Node {
		n := g.Input(fmt.Sprintf("in%d", len(*leaves)), engine.F32, shape)
		*leaves = append(*leaves, enginetest.Leaf{Node: n, F32: randn(r, shape.Numel(), s)})
		return n
	}
	cases := []enginetest.Case{
		{Name: "matmul_tiles", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			var ls []enginetest.Leaf
			a, bb := in(g, &ls, r, engine.Shape{100, 130}, 1), in(g, &ls, r, engine.Shape{70, 100}, 1)
			return ls, []*engine.Node{g.MatMul(a, bb, true, true)}
		}},
		{Name: "attention_tiles", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			var ls []enginetest.Leaf
			a := engine.Attention{Batch: 2, QLen: 70, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3}
			q := in(g, &ls, r, engine.Shape{140, 40}, 1)
			k, v := in(g, &ls, r, engine.Shape{300, 20}, 1), in(g, &ls, r, engine.Shape{300, 20}, 1)
			return ls, g.Apply(a, q, k, v)[:2]
		}},
		{Name: "attention_backward_tiles", Tol: 5e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			var ls []enginetest.Leaf
			a := engine.Attention{Batch: 2, QLen: 70, KVLen: 150, Heads: 4, KVHeads: 2, HeadDim: 10, Scale: 0.3}
			q := in(g, &ls, r, engine.Shape{140, 40}, 1)
			k, v := in(g, &ls, r, engine.Shape{300, 20}, 1), in(g, &ls, r, engine.Shape{300, 20}, 1)
			fwd := g.Apply(a, q, k, v)
			dout := in(g, &ls, r, engine.Shape{140, 40}, 1)
			return ls, g.Apply(engine.AttentionBackward{Attention: a, NeedQ: true, NeedK: true, NeedV: true}, dout, q, k, v, fwd[0], fwd[1])[:3]
		}},
		{Name: "embedding_backward_chunks", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			var ls []enginetest.Leaf
			ids := make([]int32, 600) // three chunks of ids, dims over two blocks
			for i := range ids {
				ids[i] = int32(r.IntN(13))
			}
			dy := in(g, &ls, r, engine.Shape{600, 300}, 1)
			idn := g.Input("ids", engine.I32, engine.Shape{600})
			ls = append(ls, enginetest.Leaf{Node: idn, I32: ids})
			return ls, []*engine.Node{g.Apply1(engine.EmbeddingBackward{Vocab: 17}, dy, idn)}
		}},
		{Name: "qmatmul_words", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			// K a multiple of 8: the GEMM decodes whole packed words, in both orientations.
			var ls []enginetest.Leaf
			n, k := 72, 136
			raw := make([]byte, n*k/2)
			for i := range raw {
				raw[i] = byte(r.IntN(256))
			}
			p := g.Input("packed", engine.U8, engine.Shape{len(raw)})
			ls = append(ls, enginetest.Leaf{Node: p, U8: raw})
			am := g.Input("absmax", engine.F32, engine.Shape{ceilDiv(n*k, 32)})
			ls = append(ls, enginetest.Leaf{Node: am, F32: randn(r, ceilDiv(n*k, 32), 1)})
			q := engine.QuantSpec{Type: "nf4", Code: nf4, Blocksize: 32, N: n, K: k}
			x, xt := in(g, &ls, r, engine.Shape{70, k}, 1), in(g, &ls, r, engine.Shape{70, n}, 1)
			return ls, []*engine.Node{g.QMatMul(x, p, am, q), g.Apply1(engine.QMatMul{Quant: q, TransW: true}, xt, p, am)}
		}},
		{Name: "attention_decode_chunks", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			// Two queries over three key chunks; head dim 72 > 64 invocations.
			var ls []enginetest.Leaf
			a := engine.Attention{Batch: 2, QLen: 2, KVLen: 150, Heads: 4, KVHeads: 1, HeadDim: 72, Scale: 0.12}
			q := in(g, &ls, r, engine.Shape{4, 4 * 72}, 1)
			k, v := in(g, &ls, r, engine.Shape{300, 72}, 1), in(g, &ls, r, engine.Shape{300, 72}, 1)
			return ls, g.Apply(a, q, k, v)[:2]
		}},
		{Name: "cache_attention_chunks", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			// Three sequences of 24 queries (a batch of prefills) in slots 0, 1, 2 of 160 rows:
			// up to 152 keys (three key chunks), head dim 72 > 64 invocations.
			var ls []enginetest.Leaf
			const stride, hd, qlen = 160, 72, 24
			var rows []int32
			for s, first := range []int{128, 50, 0} {
				for i := range qlen {
					rows = append(rows, int32(s*stride+first+i))
				}
			}
			idn := g.Input("rows", engine.I32, engine.Shape{len(rows)})
			ls = append(ls, enginetest.Leaf{Node: idn, I32: rows})
			n := len(rows)
			kc, vc := in(g, &ls, r, engine.Shape{3 * stride, hd}, 1), in(g, &ls, r, engine.Shape{3 * stride, hd}, 1)
			k := g.Apply1(engine.CacheWrite{}, kc, in(g, &ls, r, engine.Shape{n, hd}, 1), idn)
			v := g.Apply1(engine.CacheWrite{}, vc, in(g, &ls, r, engine.Shape{n, hd}, 1), idn)
			a := engine.Attention{Batch: 3, QLen: qlen, KVLen: stride, Heads: 4, KVHeads: 1, HeadDim: hd, Scale: 0.12, KVStride: stride}
			return ls, g.Apply(a, in(g, &ls, r, engine.Shape{n, 4 * hd}, 1), k, v, idn)[:2]
		}},
		{Name: "cache_attention_scattered", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			// One sequence of 80 queries (the tiled kernel, two query blocks) whose rows are not a
			// prefill's: 30 consecutive in slot 1, 20 backwards in slot 0, 30 every other row of
			// slot 2. Each query must still see only its own slot up to its own row.
			var ls []enginetest.Leaf
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
			idn := g.Input("rows", engine.I32, engine.Shape{len(rows)})
			ls = append(ls, enginetest.Leaf{Node: idn, I32: rows})
			n := len(rows)
			kc, vc := in(g, &ls, r, engine.Shape{3 * stride, 2 * hd}, 1), in(g, &ls, r, engine.Shape{3 * stride, 2 * hd}, 1)
			k := g.Apply1(engine.CacheWrite{}, kc, in(g, &ls, r, engine.Shape{n, 2 * hd}, 1), idn)
			v := g.Apply1(engine.CacheWrite{}, vc, in(g, &ls, r, engine.Shape{n, 2 * hd}, 1), idn)
			a := engine.Attention{Batch: 1, QLen: n, KVLen: stride, Heads: 4, KVHeads: 2, HeadDim: hd, Scale: 0.2, KVStride: stride}
			return ls, g.Apply(a, in(g, &ls, r, engine.Shape{n, 4 * hd}, 1), k, v, idn)[:2]
		}},
		{Name: "gather_lora_chunks", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			// Three chunks of rows (the middle one picks no slot), in and out over two blocks.
			var ls []enginetest.Leaf
			const n, din, dout, rank, slots = 20, 600, 300, 17, 3
			sel := []int32{1, 0, 1, 1, 2, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 0, 1}
			sn := g.Input("sel", engine.I32, engine.Shape{n})
			ls = append(ls, enginetest.Leaf{Node: sn, I32: sel})
			y, x := in(g, &ls, r, engine.Shape{n, dout}, 1), in(g, &ls, r, engine.Shape{n, din}, 1)
			a, bl := in(g, &ls, r, engine.Shape{slots * rank, din}, 0.1), in(g, &ls, r, engine.Shape{slots * dout, rank}, 0.3)
			return ls, []*engine.Node{g.GatherLoRA(y, x, sn, a, bl, rank)}
		}},
		{Name: "qgemv_words", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			var ls []enginetest.Leaf
			n, k := 9, 1003
			raw := make([]byte, (n*k+1)/2)
			for i := range raw {
				raw[i] = byte(r.IntN(256))
			}
			p := g.Input("packed", engine.U8, engine.Shape{len(raw)})
			ls = append(ls, enginetest.Leaf{Node: p, U8: raw})
			am := g.Input("absmax", engine.F32, engine.Shape{ceilDiv(n*k, 64)})
			ls = append(ls, enginetest.Leaf{Node: am, F32: randn(r, ceilDiv(n*k, 64), 1)})
			x := in(g, &ls, r, engine.Shape{1, k}, 1)
			return ls, []*engine.Node{g.QMatMul(x, p, am, engine.QuantSpec{Type: "nf4", Code: nf4, Blocksize: 64, N: n, K: k})}
		}},
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { enginetest.Check(t, c, b, ref) })
	}
}

// TestCacheWriteOutside: a cache row outside the cache (an error on the CPU) writes nothing, even
// where the cache's buffer is larger than the cache.
func TestCacheWriteOutside(t *testing.T) {
	b := openTest(t)
	cm := engine.Meta{Shape: engine.Shape{4, 3}, DType: engine.F32}
	sm := engine.Meta{Shape: engine.Shape{3, 3}, DType: engine.F32}
	rm := engine.Meta{Shape: engine.Shape{3}, DType: engine.I32}
	cache, err := engine.FromFloat32(b, cm.Shape, make([]float32, 12))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Release()
	src, err := engine.FromFloat32(b, sm.Shape, []float32{1, 1, 1, 2, 2, 2, 3, 3, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Release()
	rows, err := engine.FromInt32(b, rm.Shape, []int32{-1, 4, 1})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Release()
	ca := engine.Arg{Buf: cache.Buffer(), Meta: cm}
	l := engine.Launch{Op: engine.CacheWrite{}, In: []engine.Arg{ca, {Buf: src.Buffer(), Meta: sm}, {Buf: rows.Buffer(), Meta: rm}}, Out: []engine.Arg{ca}}
	if err := b.Run([]engine.Launch{l}); err != nil {
		t.Fatal(err)
	}
	got, err := cache.Float32()
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 0, 0, 3, 3, 3, 0, 0, 0, 0, 0, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("cache %v, want %v", got, want)
		}
	}
}

// TestReduceLarge takes the two-pass path of Sum and SumSquares.
func TestReduceLarge(t *testing.T) {
	b := openTest(t)
	c := enginetest.Case{Name: "reduce_large", Tol: 1e-5, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
		n := 100003
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		x := g.Input("x", engine.F32, engine.Shape{n})
		return []enginetest.Leaf{{Node: x, F32: v}}, []*engine.Node{g.Sum(x), g.Apply1(engine.SumSquares{}, x)}
	}}
	enginetest.Check(t, c, b, cpu.New())
}

// TestRunErrors: a launch whose buffer was freed fails with an error, and the backend keeps working.
func TestRunErrors(t *testing.T) {
	b := openTest(t)
	m := engine.Meta{Shape: engine.Shape{8}, DType: engine.F32}
	x, _ := b.Alloc(32)
	y, _ := b.Alloc(32)
	b.Free(x)
	err := b.Run([]engine.Launch{{Op: engine.Scale{S: 2}, In: []engine.Arg{{Buf: x, Meta: m}}, Out: []engine.Arg{{Buf: y, Meta: m}}}})
	if !errors.Is(err, ErrFreed) {
		t.Errorf("run on a freed buffer: %v", err)
	}
	err = b.Run([]engine.Launch{{Op: engine.Scale{S: 2}, In: []engine.Arg{{Buf: y, Meta: m}}, Out: []engine.Arg{{Buf: y, Meta: m}}}})
	if err == nil {
		t.Error("an output aliasing an operand was accepted")
	}
	if err := b.Run([]engine.Launch{{Op: engine.Binary{Fn: engine.Add}, In: []engine.Arg{{Buf: y, Meta: m}}, Out: []engine.Arg{{Buf: y, Meta: m}}}}); err == nil {
		t.Error("a launch with a missing operand was accepted")
	}
	if err := b.Run([]engine.Launch{{Op: engine.Fill{Shape: m.Shape, Value: 1}}}); err == nil {
		t.Error("a launch with a missing output was accepted")
	}
	big := engine.Meta{Shape: engine.Shape{64}, DType: engine.F32}
	if err := b.Run([]engine.Launch{{Op: engine.Fill{Shape: big.Shape, Value: 1}, Out: []engine.Arg{{Buf: y, Meta: big}}}}); err == nil {
		t.Error("an operand larger than its buffer was accepted")
	}
	if err := b.Run([]engine.Launch{{Op: engine.Fill{Shape: m.Shape, Value: 3}, Out: []engine.Arg{{Buf: y, Meta: m}}}}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if err := b.Read(y, 28, got); err != nil || got[3] != 0x40 || got[2] != 0x40 {
		t.Errorf("fill after errors: %v %v", got, err)
	}
	b.Free(y)
	b.Trim()
	if b.PooledBytes() != 0 {
		t.Error("Trim kept buffers")
	}
}

// TestGEMV covers the single-row paths: dense x·Wᵀ, x·W, a transposed column, LoRA decode.
func TestGEMV(t *testing.T) {
	b := openTest(t)
	in := func(g *engine.Graph, ls *[]enginetest.Leaf, r *rand.Rand, shape engine.Shape) *engine.Node {
		n := g.Input(fmt.Sprintf("in%d", len(*ls)), engine.F32, shape)
		v := make([]float32, shape.Numel())
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		*ls = append(*ls, enginetest.Leaf{Node: n, F32: v})
		return n
	}
	c := enginetest.Case{Name: "gemv", Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
		var ls []enginetest.Leaf
		x, col := in(g, &ls, r, engine.Shape{1, 300}), in(g, &ls, r, engine.Shape{300, 1})
		w, wt := in(g, &ls, r, engine.Shape{77, 300}), in(g, &ls, r, engine.Shape{300, 77})
		A, B := in(g, &ls, r, engine.Shape{4, 300}), in(g, &ls, r, engine.Shape{77, 4})
		outs := []*engine.Node{g.MatMul(x, w, false, true), g.MatMul(x, wt, false, false), g.MatMul(col, wt, true, false)}
		return ls, append(outs, g.Apply(engine.LoRA{Scale: 0.5}, x, w, A, B)[:2]...)
	}}
	enginetest.Check(t, c, b, cpu.New())
}

// TestTileShape: the matmul kernel maps its WG invocations onto (BM/TM)×(BN/TN) and loads tiles in
// strides of WG.
func TestTileShape(t *testing.T) {
	if (tileM/threadsM)*(tileN/threadsN) != wg {
		t.Fatalf("tile %dx%d with %dx%d per invocation needs %d invocations, WG is %d", tileM, tileN, threadsM, threadsN, (tileM/threadsM)*(tileN/threadsN), wg)
	}
	if wg&(wg-1) != 0 {
		t.Fatal("WG must be a power of two for the tree reductions")
	}
	if 4*(tileK*(tileM+tileN)+wg) > 16384 {
		t.Fatal("matmul tiles exceed WebGPU's default 16 KiB of workgroup memory")
	}
}
