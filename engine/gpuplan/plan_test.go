package gpuplan

import "testing"

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
