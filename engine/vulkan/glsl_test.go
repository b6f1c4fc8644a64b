package vulkan

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	vk "github.com/goki/vulkan"
	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/engine/gpuplan"
	"github.com/lathe-ml/lathe/quant"
	"github.com/lathe-ml/lathe/shaders"
)

// fakeDevice is a device as the shim would describe an NVIDIA GPU with NV cooperative matrices
// (16×16×16 f16·f16+f32 at subgroup scope), subgroups of 32, f16 and the Vulkan memory model.
func fakeDevice() *device {
	d := &device{exts: map[string]bool{"VK_NV_cooperative_matrix": true, "VK_KHR_vulkan_memory_model": true, "VK_KHR_shader_float16_int8": true, "VK_KHR_16bit_storage": true}}
	d.limits.MaxComputeWorkGroupInvocations = 1024
	d.limits.MaxComputeSharedMemorySize = 49152
	d.limits.MaxComputeWorkGroupCount = [3]uint32{1 << 31, 65535, 65535}
	d.ext = extended{subgroupSize: 32, subgroupStages: stageCompute, subgroupOps: subgroupBasic | subgroupArithmetic, f16: true, storage16: true,
		coopFeature: true, memoryModel: true,
		coop: []coopShape{{M: 16, N: 8, K: 16, A: componentF16, B: componentF16, C: componentF16, Scope: scopeSubgroup},
			{M: 16, N: 16, K: 16, A: componentF16, B: componentF16, C: componentF32, Scope: scopeSubgroup}}}
	return d
}

// fakeBuf is a buffer identity for planning (plans never touch memory).
type fakeBuf struct{ n int64 }

func (f *fakeBuf) Bytes() int64 { return f.n }

// plan plans one launch of op on d's plan device and returns its commands.
func plan(t *testing.T, d *device, op engine.Op, in ...engine.Meta) []gpuplan.Cmd {
	t.Helper()
	out, err := op.Infer(in)
	if err != nil {
		t.Fatal(err)
	}
	l := engine.Launch{Op: op}
	for _, m := range in {
		l.In = append(l.In, engine.Arg{Buf: &fakeBuf{m.Bytes()}, Meta: m})
	}
	for _, m := range out {
		l.Out = append(l.Out, engine.Arg{Buf: &fakeBuf{m.Bytes()}, Meta: m})
	}
	p, err := gpuplan.Launch(d.planDevice(false), l)
	if err != nil {
		t.Fatal(err)
	}
	return p.Cmds
}

// modules is the module each planned command runs on the tier ("wgsl:" + kernel where none).
func modules(t *testing.T, tier glslTier, cmds []gpuplan.Cmd) []string {
	t.Helper()
	var out []string
	for _, c := range cmds {
		if c.Kernel == "" {
			continue
		}
		ch, ok, err := tier.choose(c)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, ch.module)
		} else {
			out = append(out, "wgsl:"+c.Kernel)
		}
	}
	return out
}

// The variants follow the queried properties: a device that reports NV cooperative matrices of
// 16×16×16 f16 with f32 accumulation gets the coopmat NF4 GEMM; without the shape, the feature,
// the memory model or f16 it gets the register-tiled GEMM; KHR-only shapes get the register tiles
// too while glslang cannot build the KHR module. Decode's GEMV runs on subgroups where compute
// has subgroup arithmetic, naga's WGSL otherwise.
func TestGLSLTierChoice(t *testing.T) {
	q := engine.QuantSpec{Type: quant.NF4, Blocksize: 64, N: 300, K: 256}
	qmm := engine.QMatMul{Quant: q}
	x9 := engine.Meta{Shape: engine.Shape{9, 256}, DType: engine.F32}
	x1 := engine.Meta{Shape: engine.Shape{1, 256}, DType: engine.F32}
	packed := engine.Meta{Shape: engine.Shape{300 * 256 / 2}, DType: engine.U8}
	absmax := engine.Meta{Shape: engine.Shape{300 * 256 / 64}, DType: engine.F32}
	dense := []engine.Meta{{Shape: engine.Shape{70, 33}, DType: engine.F32}, {Shape: engine.Shape{33, 65}, DType: engine.F32}}

	d := fakeDevice()
	tier := d.glslTier()
	if tier.coop != "nv" || !tier.f16 || tier.subgroupSize != 32 {
		t.Fatalf("fake NV device: tier %+v", tier)
	}
	cmds := plan(t, d, qmm, x9, packed, absmax)
	if got := modules(t, tier, cmds); strings.Join(got, ",") != "qgemm_coopmat_nv" {
		t.Errorf("NF4 GEMM on an NV coopmat device runs %v", got)
	}
	ch, _, _ := tier.choose(cmds[0])
	if ch.spec[0] != (specConst{0, 128}) || ch.grid != [3]uint32{5, 1, 1} {
		t.Errorf("coopmat dispatch: spec %v grid %v (want 4 subgroups of 32, ⌈9/64⌉·⌈300/64⌉ = 5 groups)", ch.spec, ch.grid)
	}
	if got := modules(t, tier, plan(t, d, engine.MatMul{}, dense...)); strings.Join(got, ",") != "gemm" {
		t.Errorf("dense f32 GEMM runs %v", got)
	}
	if got := modules(t, tier, plan(t, d, qmm, x1, packed, absmax)); strings.Join(got, ",") != "qgemv_sg" {
		t.Errorf("NF4 GEMV runs %v", got)
	}
	// A 16-bit frozen weight is read by the WGSL kernel, which has the 16-bit forms.
	half := engine.Meta{Shape: engine.Shape{65, 33}, DType: engine.BF16}
	if got := modules(t, tier, plan(t, d, engine.MatMul16{}, dense[0], half)); strings.Join(got, ",") != "wgsl:matmul" {
		t.Errorf("bf16-weight GEMM runs %v, want naga's WGSL", got)
	}

	for name, mut := range map[string]func(d *device){
		"no f32-accumulating shape": func(d *device) { d.ext.coop = d.ext.coop[:1] },
		"no coopmat feature":        func(d *device) { d.ext.coopFeature = false },
		"no memory model":           func(d *device) { d.ext.memoryModel = false },
		"no f16":                    func(d *device) { d.ext.f16 = false },
		"KHR only": func(d *device) {
			d.ext.coop[1].KHR = true
			d.exts["VK_KHR_cooperative_matrix"] = true
		},
		"too little shared memory": func(d *device) { d.limits.MaxComputeSharedMemorySize = 16384 },
	} {
		d := fakeDevice()
		mut(d)
		if got := modules(t, d.glslTier(), plan(t, d, qmm, x9, packed, absmax)); strings.Join(got, ",") != "gemm" {
			t.Errorf("%s: NF4 GEMM runs %v, want the register-tiled gemm", name, got)
		}
	}
	d = fakeDevice()
	d.ext.subgroupOps = subgroupBasic
	if got := modules(t, d.glslTier(), plan(t, d, qmm, x1, packed, absmax)); strings.Join(got, ",") != "wgsl:qgemv" {
		t.Errorf("without subgroup arithmetic the GEMV runs %v", got)
	}
	if _, err := shaders.SPIRV("qgemm_coopmat_khr"); err == nil {
		t.Log("the KHR coopmat module is built: the KHR-only case should now pick it; update this test")
	}
}

// The GEMM's tiles come from the device's limits.
func TestGEMMTilesFromLimits(t *testing.T) {
	for _, c := range []struct {
		inv, shared int
		want        [5]int
	}{
		{1024, 49152, [5]int{64, 64, 32, 4, 4}},
		{1024, 32768, [5]int{64, 64, 16, 4, 4}},
		{128, 32768, [5]int{32, 32, 32, 4, 4}},
		{256, 8192, [5]int{64, 64, 8, 4, 4}},
	} {
		if got := (glslTier{maxInvocations: c.inv, sharedBytes: c.shared}).gemmTiles(); got != c.want {
			t.Errorf("%d invocations, %d bytes shared: tiles %v, want %v", c.inv, c.shared, got, c.want)
		}
	}
}

// glslCases are the suite's matrix products on the tiles (below, at and above each block; every
// transpose), its dense, 4-bit and LoRA products, and 4-bit products whose rows are whole 32-code
// chunks (the GEMV's chunked path) with LoRA decode, N not a multiple of anything.
func glslCases(tiles engine.Tiles) []enginetest.Case {
	var cs []enginetest.Case
	for _, c := range enginetest.TileCases(tiles) {
		if strings.HasPrefix(c.Name, "tiles/matmul/") {
			cs = append(cs, c)
		}
	}
	for _, c := range enginetest.OpCases() {
		for _, p := range []string{"matmul/", "qmatmul/", "lora/"} {
			if strings.HasPrefix(c.Name, p) {
				cs = append(cs, c)
			}
		}
	}
	for _, typ := range []quant.Type{quant.NF4, quant.FP4} {
		for _, k := range []int{96, 256} {
			cs = append(cs, enginetest.Case{Name: fmt.Sprintf("glsl/qgemv/%v/k%d", typ, k), Tol: 1e-4, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
				const n, rank = 37, 5
				var leaves []enginetest.Leaf
				f := func(shape ...int) *engine.Node {
					nd := g.Input(fmt.Sprintf("in%d", len(leaves)), engine.F32, engine.Shape(shape))
					v := make([]float32, nd.Meta().Shape.Numel())
					for i := range v {
						v[i] = float32(r.NormFloat64())
					}
					leaves = append(leaves, enginetest.Leaf{Node: nd, F32: v})
					return nd
				}
				q := engine.QuantSpec{Type: typ, Blocksize: 64, N: n, K: k}
				raw := make([]byte, n*k/2)
				for i := range raw {
					raw[i] = byte(r.IntN(256))
				}
				packed := g.Input("packed", engine.U8, engine.Shape{len(raw)})
				leaves = append(leaves, enginetest.Leaf{Node: packed, U8: raw})
				nb := (n*k + 63) / 64
				absmax := g.Input("absmax", engine.F32, engine.Shape{nb})
				am := make([]float32, nb)
				for i := range am {
					am[i] = float32(0.05 + r.Float64())
				}
				leaves = append(leaves, enginetest.Leaf{Node: absmax, F32: am})
				x := f(1, k)
				y := g.QMatMul(x, packed, absmax, q)
				lo := g.Apply(engine.LoRA{Scale: 0.7, Quant: &q}, x, packed, absmax, f(rank, k), f(n, rank))
				return leaves, []*engine.Node{y, lo[0]}
			}})
		}
	}
	return cs
}

// The GLSL tier on the real device (lavapipe in CI) against the CPU reference, on the tiles chosen
// from its limits and on other tilings (non-square, deep and shallow BK, TM ≠ TN), every shape off
// the tiles. lavapipe lists no cooperative matrices: its tier must not pick the coopmat kernel,
// and the NF4 GEMM runs on register tiles.
func TestGLSLConformance(t *testing.T) {
	b := openTest(t)
	if b.tier.coop != "" && len(b.d.ext.coop) == 0 {
		t.Fatalf("tier picked %q on a device without cooperative matrices", b.tier.coop)
	}
	if b.d.info.Type == "cpu" && b.tier.coop != "" {
		t.Fatalf("lavapipe's tier picked the coopmat kernel")
	}
	used := map[string]bool{}
	b.compiled = func(name string, code []uint32) { used[name] = true }
	ref := cpu.New()
	for _, tiles := range [][5]int{{}, {32, 64, 8, 4, 4}, {64, 32, 32, 8, 2}, {16, 16, 16, 2, 2}} {
		b.mu.Lock()
		b.tier.tiles = tiles
		b.mu.Unlock()
		tl := b.Caps().Tiles
		t.Run(fmt.Sprintf("tiles=%v", tl.MatMul), func(t *testing.T) {
			for _, c := range glslCases(tl) {
				t.Run(c.Name, func(t *testing.T) { enginetest.Check(t, c, b, ref) })
			}
		})
	}
	b.tier.tiles = [5]int{}
	want := []string{"gemm"}
	if b.tier.subgroupSize > 0 {
		want = append(want, "qgemv_sg")
	}
	for _, m := range want {
		if !used[m] {
			t.Errorf("the GLSL module %s never ran (ran: %v)", m, used)
		}
	}
}

// gemm_f16 (f16 A and B, f32 accumulation), run directly where the device has f16: against a
// float64 reference of the f16-rounded operands, every transpose, shapes off the tiles.
func TestGEMMF16(t *testing.T) {
	b := openTest(t)
	if !b.tier.f16 {
		if b.d.info.Type == "cpu" {
			t.Fatalf("lavapipe lists f16 but the tier has it off (refused: %v)", b.refused)
		}
		t.Skip("no shaderFloat16 + 16-bit storage on this device")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
		for _, s := range [][3]int{{37, 29, 53}, {65, 63, 17}, {1, 70, 33}} {
			m, n, k := s[0], s[1], s[2]
			a16, af := randHalf(r, m*k)
			b16, bf := randHalf(r, k*n)
			lda, ldb := k, n
			if tr[0] {
				lda = m
			}
			if tr[1] {
				ldb = k
			}
			got := runGEMMF16(t, b, tr, m, n, k, lda, ldb, a16, b16)
			var worst float64
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					var want float64
					for kk := 0; kk < k; kk++ {
						ai, bi := i*lda+kk, kk*ldb+j
						if tr[0] {
							ai = kk*lda + i
						}
						if tr[1] {
							bi = j*ldb + kk
						}
						av, bv := af[ai], bf[bi]
						want += av * bv
					}
					worst = math.Max(worst, math.Abs(float64(got[i*n+j])-want))
				}
			}
			if worst > 1e-4*math.Sqrt(float64(k)) {
				t.Errorf("tr %v %dx%dx%d: max |error| %g", tr, m, n, k, worst)
			}
		}
	}
}

func randHalf(r *rand.Rand, n int) ([]byte, []float64) {
	raw := make([]byte, 2*n)
	f := make([]float64, n)
	for i := range f {
		h := float16.Fromfloat32(float32(r.NormFloat64()))
		f[i] = float64(h.Float32())
		raw[2*i], raw[2*i+1] = byte(h), byte(h>>8)
	}
	return raw, f
}

// runGEMMF16 dispatches gemm_f16 once: c = op(a)·op(b).
func runGEMMF16(t *testing.T, b *Backend, tr [2]bool, m, n, k, lda, ldb int, a16, b16 []byte) []float32 {
	t.Helper()
	bufs := make([]engine.Buffer, 6)
	for i, data := range [][]byte{a16, b16, make([]byte, 16), make([]byte, 16), make([]byte, 16), make([]byte, 4*m*n)} {
		buf, err := b.Alloc(int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Free(buf)
		if err := b.Write(buf, 0, data); err != nil {
			t.Fatal(err)
		}
		bufs[i] = buf
	}
	params := new(gpuplan.Params).U(m, n, k, lda, ldb, n).F(1).U(0, 0, 0).F(0).U(0, 0).Vec4s(nil, 16).Bytes()
	tl := b.tier.gemmTiles()
	ch := glslChoice{module: "gemm_f16", spec: []specConst{{0, uint32((tl[0] / tl[3]) * (tl[1] / tl[4]))}, {1, uint32(tl[0])}, {2, uint32(tl[1])},
		{3, uint32(tl[2])}, {4, uint32(tl[3])}, {5, uint32(tl[4])}, {6, b32(tr[0])}, {7, b32(tr[1])}}}
	grid, err := gpuplan.GroupsFor(gpuplan.CeilDiv(m, tl[0])*gpuplan.CeilDiv(n, tl[1]), 65535)
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	pl, err := b.getGLSLPipeline(ch, 6, true)
	if err != nil {
		b.mu.Unlock()
		t.Fatal(err)
	}
	p := &program{b: b}
	s := step{pipe: pl, params: params, grid: grid}
	for _, x := range bufs {
		buf := x.(*buffer)
		s.binds = append(s.binds, binding{buf: buf.buf, size: buf.size})
	}
	p.steps = []step{s}
	err = p.record(vk.CommandBufferUsageOneTimeSubmitBit)
	if err == nil {
		err = b.submit(p.cb, p.destroyNow)
	}
	b.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 4*m*n)
	if err := b.Read(bufs[5], 0, out); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, m*n)
	for i := range got {
		got[i] = math.Float32frombits(uint32(out[4*i]) | uint32(out[4*i+1])<<8 | uint32(out[4*i+2])<<16 | uint32(out[4*i+3])<<24)
	}
	return got
}

// coopmatTol is the tolerance of the cooperative-matrix GEMM: x and W are rounded to f16 (a
// relative 2⁻¹¹ each) before their products, which accumulate in f32.
const coopmatTol = 4e-3

// The coopmat NF4 GEMM's source compiled with its matrix operations emulated on shared memory
// (qgemm_coopmat_emu) runs every 4-bit product of the suite on this device (lavapipe in CI: no
// cooperative matrices) against the CPU: the f16 tiles, the dequantization, both layouts of W,
// the epilogue (alpha, LoRA, ACC) and the bounds off the 64×64 tiles, all but the three
// cooperative-matrix calls the NV module makes instead.
func TestCoopmatKernelEmulated(t *testing.T) {
	b := openTest(t)
	if !b.tier.f16 || b.tier.subgroupSize < 8 || 4*b.tier.subgroupSize > b.tier.maxInvocations {
		if b.d.info.Type == "cpu" {
			t.Fatalf("lavapipe's tier cannot run the emulated coopmat kernel: %+v", b.tier)
		}
		t.Skipf("no f16 or subgroups of 8 or more: %+v", b.tier)
	}
	saved := b.tier.coop
	b.tier.coop = "emu"
	defer func() { b.tier.coop = saved }()
	used := map[string]bool{}
	b.compiled = func(name string, code []uint32) { used[name] = true }
	ref := cpu.New()
	n := 0
	for _, c := range enginetest.Cases(b.Caps().Tiles) {
		if !strings.Contains(c.Name, "nf4") && !strings.Contains(c.Name, "qmatmul") {
			continue
		}
		c.Tol = max(c.Tol, coopmatTol)
		n++
		t.Run(c.Name, func(t *testing.T) { enginetest.Check(t, c, b, ref) })
	}
	for _, s := range [][3]int{{70, 130, 96}, {129, 65, 40}, {3, 200, 67}} {
		c := enginetest.Case{Name: fmt.Sprintf("qgemm/%dx%dx%d", s[0], s[1], s[2]), Tol: coopmatTol, Build: func(g *engine.Graph, r *rand.Rand) ([]enginetest.Leaf, []*engine.Node) {
			m, nn, k := s[0], s[1], s[2]
			var leaves []enginetest.Leaf
			x := g.Input("x", engine.F32, engine.Shape{m, k})
			xv := make([]float32, m*k)
			for i := range xv {
				xv[i] = float32(r.NormFloat64())
			}
			raw := make([]byte, (nn*k+1)/2)
			for i := range raw {
				raw[i] = byte(r.IntN(256))
			}
			packed := g.Input("packed", engine.U8, engine.Shape{len(raw)})
			nb := (nn*k + 31) / 32
			am := make([]float32, nb)
			for i := range am {
				am[i] = float32(0.05 + r.Float64())
			}
			absmax := g.Input("absmax", engine.F32, engine.Shape{nb})
			leaves = append(leaves, enginetest.Leaf{Node: x, F32: xv}, enginetest.Leaf{Node: packed, U8: raw}, enginetest.Leaf{Node: absmax, F32: am})
			q := engine.QuantSpec{Type: quant.NF4, Blocksize: 32, N: nn, K: k}
			dy := g.Input("dy", engine.F32, engine.Shape{m, nn})
			dyv := make([]float32, m*nn)
			for i := range dyv {
				dyv[i] = float32(r.NormFloat64())
			}
			leaves = append(leaves, enginetest.Leaf{Node: dy, F32: dyv})
			return leaves, []*engine.Node{g.QMatMul(x, packed, absmax, q), g.Apply1(engine.QMatMul{Quant: q, TransW: true}, dy, packed, absmax)}
		}}
		n++
		t.Run(c.Name, func(t *testing.T) { enginetest.Check(t, c, b, ref) })
	}
	if !used["qgemm_coopmat_emu"] || n < 10 {
		t.Errorf("the emulated coopmat kernel ran on %d cases (modules: %v)", n, used)
	}
}
