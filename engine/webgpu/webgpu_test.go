package webgpu

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/engine/enginetest"
	"github.com/lathe-ml/lathe/engine/gpuplan"
	"github.com/lathe-ml/lathe/shaders"
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

// TestConformance runs the suite on the kernels the device's caps choose (on lavapipe: the
// subgroup variants); TestConformancePlain on the base set, which devices without them run.
func TestConformance(t *testing.T) {
	b := openTest(t)
	if !b.subgroups() {
		t.Logf("no subgroups: the base kernel set only (%+v)", b.Caps())
	}
	enginetest.Run(t, b, cpu.New())
}

// TestConformanceF16 runs the suite on the f16-arithmetic variants (engine.F16Arithmetic), which
// devices with shader-f16 run for mixed-precision training.
func TestConformanceF16(t *testing.T) {
	b := openTest(t)
	if !b.Caps().ShaderF16 {
		if os.Getenv("LATHE_REQUIRE_GPU") == "1" {
			t.Fatalf("LATHE_REQUIRE_GPU=1 and %s has no shader-f16", b.Device().Name)
		}
		t.Skip("no shader-f16")
	}
	if err := b.SetF16Arithmetic(true); err != nil {
		t.Fatal(err)
	}
	enginetest.RunWith(t, b, cpu.New(), enginetest.F16Options)
}

func TestConformancePlain(t *testing.T) {
	b := openTest(t)
	b.plain = true
	enginetest.Run(t, b, cpu.New())
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

// TestFaultFlag: a cache row outside the cache writes nothing (not even where the buffer is larger
// than the cache), the next read reports ErrIndex, and the flag is cleared for the reads after.
func TestFaultFlag(t *testing.T) {
	b := openTest(t)
	cm := engine.Meta{Shape: engine.Shape{4, 3}, DType: engine.F32}
	sm := engine.Meta{Shape: engine.Shape{3, 3}, DType: engine.F32}
	rm := engine.Meta{Shape: engine.Shape{3}, DType: engine.I32}
	cache, err := engine.FromFloat32(b, engine.Shape{5, 3}, make([]float32, 15)) // a row to spare
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
	if _, err := cache.Float32(); !errors.Is(err, ErrIndex) {
		t.Fatalf("read after a bad cache row: %v, want ErrIndex", err)
	}
	got, err := cache.Float32()
	if err != nil {
		t.Fatalf("the fault was not cleared: %v", err)
	}
	want := []float32{0, 0, 0, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("cache %v, want %v", got, want)
		}
	}
}

// The caps follow the device's features: the adapter listing and the opened device agree, and a
// device with subgroups has a measured subgroup size (a power of two) whose subgroupAdd checked
// out. lavapipe, the CI device, has all three features (Mesa 22.3), so there nothing is optional.
func TestCaps(t *testing.T) {
	b := openTest(t)
	c := b.Caps()
	listed := b.Device().Caps
	if listed == nil {
		t.Fatal("the adapter listing has no caps")
	}
	if listed.ShaderF16 != c.ShaderF16 || listed.Subgroups != c.Subgroups || listed.Timestamps != c.Timestamps {
		t.Errorf("the listing's caps %+v differ from the device's %+v", *listed, c)
	}
	if c.Subgroups != (c.SubgroupSize > 0) || c.SubgroupSize&(c.SubgroupSize-1) != 0 {
		t.Errorf("subgroups %v with subgroup size %d", c.Subgroups, c.SubgroupSize)
	}
	if strings.Contains(strings.ToLower(b.Device().Name), "llvmpipe") && !(c.ShaderF16 && c.Subgroups && c.Timestamps) {
		t.Errorf("lavapipe lacks a cap it has: %+v", c)
	}
	t.Logf("caps: f16 %v, subgroups %v (size %d), timestamps %v", c.ShaderF16, c.Subgroups, c.SubgroupSize, c.Timestamps)
}

// GPU timing: the device's time of a case's kernels is positive and no longer than the wall
// clock of the same runs (which adds the submission and the wait); timing off, GPUTime refuses.
func TestGPUTiming(t *testing.T) {
	b := openTest(t)
	if !b.Caps().Timestamps {
		if strings.Contains(strings.ToLower(b.Device().Name), "llvmpipe") {
			t.Fatal("lavapipe has timestamps")
		}
		t.Skip("no timestamp queries on this device")
	}
	var c enginetest.Case
	for _, x := range enginetest.OpCases() {
		if x.Name == "qmatmul/gemm" {
			c = x
		}
	}
	if c.Name == "" {
		t.Fatal("no qmatmul/gemm case")
	}
	wall, gpu, launches, err := enginetest.TimeGPU(c, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: wall %v, gpu %v a run (%d launches)", c.Name, wall, gpu, launches)
	if gpu <= 0 || gpu > wall {
		t.Errorf("gpu time %v outside (0, wall %v]", gpu, wall)
	}
	if _, err := b.GPUTime(); err == nil {
		t.Error("GPUTime with timing off succeeded")
	}
	// More passes than the query set holds between two reads: an error, not a wrong time.
	if err := b.SetGPUTiming(true); err != nil {
		t.Fatal(err)
	}
	x, err := b.Alloc(4 * 100)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free(x)
	for i := 0; i <= timingQueries/timingSlot; i++ {
		r := &recorder{b: b}
		r.dispatch("fill", []shaders.Const{{Name: "WG", Value: "256u"}}, false, [3]uint32{1, 1, 1}, new(gpuplan.Params).U(100).F(1).Bytes(), bind{buf: x.(*buffer).buf, size: 400, rw: true})
		b.mu.Lock()
		err := r.submit()
		b.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.GPUTime(); err == nil {
		t.Error("an overflowing query set gave a time")
	}
	if d, err := b.GPUTime(); err != nil || d != 0 {
		t.Errorf("GPUTime after a reset: %v, %v", d, err)
	}
	if err := b.SetGPUTiming(false); err != nil {
		t.Fatal(err)
	}
}
