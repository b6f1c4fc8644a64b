package gpuplan

import (
	"encoding/binary"
	"testing"

	"github.com/lathe-ml/lathe/engine"
)

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
		got, err := GroupsFor(c.groups, c.max)
		if (err != nil) != c.err {
			t.Errorf("GroupsFor(%d, %d): error %v", c.groups, c.max, err)
			continue
		}
		if c.err {
			continue
		}
		if got != c.want {
			t.Errorf("GroupsFor(%d, %d) = %v, want %v", c.groups, c.max, got, c.want)
		}
		if n := int(got[0]) * int(got[1]); n < c.groups || (c.groups > 0 && n-c.groups >= int(got[0])) {
			t.Errorf("GroupsFor(%d, %d) = %v covers %d workgroups", c.groups, c.max, got, n)
		}
	}
	if CeilDiv(37, 16) != 3 || CeilDiv(32, 16) != 2 {
		t.Error("CeilDiv")
	}
}

// TestTileShape: the matmul kernel maps its WG invocations onto (BM/TM)×(BN/TN) and loads tiles in
// strides of WG.
func TestTileShape(t *testing.T) {
	if (TileM/ThreadsM)*(TileN/ThreadsN) != WG {
		t.Fatalf("tile %dx%d with %dx%d per invocation needs %d invocations, WG is %d", TileM, TileN, ThreadsM, ThreadsN, (TileM/ThreadsM)*(TileN/ThreadsN), WG)
	}
	if WG&(WG-1) != 0 {
		t.Fatal("WG must be a power of two for the tree reductions")
	}
	if 4*(TileK*(TileM+TileN)+WG) > 16384 {
		t.Fatal("matmul tiles exceed WebGPU's default 16 KiB of workgroup memory")
	}
}

func TestParams(t *testing.T) {
	p := new(Params).U(1, 2, 3, 4).F(5).Vec4s([]float32{1, 2, 3}, 8)
	b := p.Bytes()
	if len(b) != 4*16 {
		t.Fatalf("params are %d bytes, want 64 (5 scalars padded to 8 words, then 8 floats)", len(b))
	}
}

// fakeBuf is a buffer identity for planning (plans never touch memory).
type fakeBuf struct{ n int64 }

func (f *fakeBuf) Bytes() int64 { return f.n }

func arg(shape ...int) engine.Arg {
	m := engine.Meta{Shape: engine.Shape(shape), DType: engine.F32}
	return engine.Arg{Buf: &fakeBuf{m.Bytes()}, Meta: m}
}

// A GEMM off the tile multiples gets one workgroup per started 64×64 tile, binds its operands in
// the kernel's order (a, b, absmax, xa, bl, c: the unused ones small scratch), and its parameters
// carry m, n, k and the leading dimensions.
func TestPlanMatMul(t *testing.T) {
	d := Device{MaxGroups: 65535, WorkgroupStorage: 32 << 10, MaxBinding: 1 << 30}
	l := engine.Launch{Op: engine.MatMul{TransB: true}, In: []engine.Arg{arg(70, 33), arg(130, 33)}, Out: []engine.Arg{arg(70, 130)}}
	p, err := Launch(d, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Cmds) != 1 || p.Cmds[0].Kernel != "matmul" {
		t.Fatalf("plan %+v, want one matmul", p.Cmds)
	}
	c := p.Cmds[0]
	if c.Grid != [3]uint32{2 * 3, 1, 1} {
		t.Errorf("grid %v, want 6 tiles", c.Grid)
	}
	want := []Ref{{Kind: In, Index: 0}, {Kind: In, Index: 1}, {Kind: Temp, Index: 0}, {Kind: Temp, Index: 1}, {Kind: Temp, Index: 2}, {Kind: Out, Index: 0, RW: true}}
	if len(c.Binds) != len(want) {
		t.Fatalf("binds %+v", c.Binds)
	}
	for i := range want {
		if c.Binds[i] != want[i] {
			t.Errorf("binding %d is %+v, want %+v", i, c.Binds[i], want[i])
		}
	}
	words := func(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }
	for i, w := range []uint32{70, 130, 33, 33, 33, 130} { // m, n, k, lda, ldb, ldc
		if got := words(c.Params, i); got != w {
			t.Errorf("param %d = %d, want %d", i, got, w)
		}
	}
	// An output that aliases an operand is refused before any kernel is chosen.
	l.Out[0].Buf = l.In[0].Buf
	if _, err := Launch(d, l); err == nil {
		t.Error("an output sharing an operand's buffer was planned")
	}
}

// The variant is chosen from the device: RMSNorm's subgroup form only where Subgroups is set.
func TestPlanVariantFromDevice(t *testing.T) {
	l := engine.Launch{Op: engine.RMSNorm{Eps: 1e-5}, In: []engine.Arg{arg(5, 40), arg(40)}, Out: []engine.Arg{arg(5, 40)}}
	for _, sg := range []bool{false, true} {
		p, err := Launch(Device{Subgroups: sg, WorkgroupStorage: 16 << 10}, l)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Cmds) != 1 || p.Cmds[0].Kernel != "rmsnorm" || p.Cmds[0].Subgroups != sg || p.Cmds[0].Grid != [3]uint32{5, 1, 1} {
			t.Errorf("subgroups %v: plan %+v", sg, p.Cmds)
		}
	}
}

func half(dt engine.DType, shape ...int) engine.Arg {
	m := engine.Meta{Shape: engine.Shape(shape), DType: dt}
	return engine.Arg{Buf: &fakeBuf{m.Bytes()}, Meta: m}
}

func constOf(c Cmd, name string) string {
	for _, k := range c.Consts {
		if k.Name == name {
			return k.Value
		}
	}
	return ""
}

// A 16-bit frozen weight is read as stored: MatMul16 is one matmul (or gemv) dispatch whose BH
// names the type and whose B is the weight's own buffer (no cast, no f32 copy); Embedding16 one
// gather with TH; an op without a 16-bit kernel is refused so that Compile decomposes it.
func TestPlanWeights16(t *testing.T) {
	d := Device{MaxGroups: 65535, WorkgroupStorage: 32 << 10, MaxBinding: 1 << 30}
	for _, c := range []struct {
		l      engine.Launch
		kernel string
		name   string
		value  string
		n, k   int
	}{
		{engine.Launch{Op: engine.MatMul16{}, In: []engine.Arg{arg(70, 33), half(engine.F16, 130, 33)}, Out: []engine.Arg{arg(70, 130)}}, "matmul", "BH", "1u", 130, 33},
		{engine.Launch{Op: engine.MatMul16{TransW: true}, In: []engine.Arg{arg(70, 130), half(engine.BF16, 130, 33)}, Out: []engine.Arg{arg(70, 33)}}, "matmul", "BH", "2u", 33, 130},
		{engine.Launch{Op: engine.MatMul16{}, In: []engine.Arg{arg(1, 33), half(engine.BF16, 130, 33)}, Out: []engine.Arg{arg(1, 130)}}, "gemv", "BH", "2u", 130, 33},
		{engine.Launch{Op: engine.Embedding16{}, In: []engine.Arg{half(engine.F16, 50, 8), {Buf: &fakeBuf{12}, Meta: engine.Meta{Shape: engine.Shape{3}, DType: engine.I32}}}, Out: []engine.Arg{arg(3, 8)}}, "embedding", "TH", "1u", 0, 0},
	} {
		if err := Supports(d, c.l.Op, []engine.Meta{c.l.In[0].Meta, c.l.In[1].Meta}); err != nil {
			t.Fatalf("%s: %v", c.l.Op.Name(), err)
		}
		p, err := Launch(d, c.l)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Cmds) != 1 || p.Cmds[0].Kernel != c.kernel || constOf(p.Cmds[0], c.name) != c.value {
			t.Fatalf("%s: plan %+v, want one %s with %s=%s", c.l.Op.Name(), p.Cmds, c.kernel, c.name, c.value)
		}
		if w := p.Cmds[0].Binds[1]; c.kernel != "embedding" && w != (Ref{Kind: In, Index: 1}) {
			t.Errorf("%s: B is %+v, want the weight's buffer", c.l.Op.Name(), w)
		}
		if c.n > 0 {
			if n, k := binary.LittleEndian.Uint32(p.Cmds[0].Params[4:]), binary.LittleEndian.Uint32(p.Cmds[0].Params[8:]); int(n) != c.n || int(k) != c.k {
				t.Errorf("%s: n, k = %d, %d, want %d, %d", c.l.Op.Name(), n, k, c.n, c.k)
			}
		}
	}
	f16 := engine.Meta{Shape: engine.Shape{4, 8}, DType: engine.F16}
	if err := Supports(d, engine.Binary{Fn: engine.Add}, []engine.Meta{f16, f16}); err == nil {
		t.Error("an add of 16-bit operands was accepted: no kernel reads them")
	}
}
