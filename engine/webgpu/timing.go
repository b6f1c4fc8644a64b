package webgpu

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// GPU timing: with it on, every compute pass a submission encodes writes a timestamp at its
// beginning and at its end (WebGPU's timestampWrites, the timestamp-query feature); the queries
// are resolved into a buffer at the end of the submission, and GPUTime reads them, scaled by the
// queue's timestamp period. The time is the device's: kernels only, no submit or host wait.

const (
	// timingQueries is the capacity of the query set: 32 queries per submission slot (a resolve
	// writes at a 256-byte aligned offset), 64 submissions between two GPUTime calls.
	timingQueries = 2048
	timingSlot    = 32
)

// timer is a backend's GPU timing state (nil pointer fields while timing is off).
type timer struct {
	qs       *wgpu.QuerySet
	resolved *buffer
	used     uint32   // queries handed out (a submission's first query is a multiple of timingSlot)
	pairs    []uint32 // the first query of each timed pass resolved so far
	pending  []uint32 // those of the submission being encoded
	overflow bool     // a pass went untimed: the query set was full
}

// SetGPUTiming turns GPU timing on or off (engine.GPUTimer). It fails on a device without
// timestamp queries.
func (b *Backend) SetGPUTiming(on bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return err
	}
	if !on {
		b.dropTimer()
		return nil
	}
	if !b.caps.Timestamps {
		return fmt.Errorf("webgpu: %s has no timestamp queries", b.info.Name)
	}
	if b.timer != nil {
		return nil
	}
	qs, err := b.dev.TryCreateQuerySet(&wgpu.QuerySetDescriptor{Label: "lathe timing", Type: wgpu.QueryTypeTimestamp, Count: timingQueries})
	if err != nil {
		return fmt.Errorf("webgpu: timing queries: %w", err)
	}
	buf, err := b.dev.TryCreateBuffer(&wgpu.BufferDescriptor{Label: "lathe timing", Usage: wgpu.BufferUsageQueryResolve | wgpu.BufferUsageCopySrc, Size: 8 * timingQueries})
	if err != nil {
		qs.Release()
		return fmt.Errorf("webgpu: timing buffer: %w", err)
	}
	b.timer = &timer{qs: qs, resolved: &buffer{b: b, buf: buf, size: 8 * timingQueries, class: 8 * timingQueries}}
	return nil
}

func (b *Backend) dropTimer() {
	if b.timer == nil {
		return
	}
	b.timer.qs.Release()
	b.timer.resolved.buf.Release()
	b.timer = nil
}

// beginPass begins a compute pass, timed when timing is on and the query set has room.
func (b *Backend) beginPass(enc *wgpu.CommandEncoder) *wgpu.ComputePassEncoder {
	t := b.timer
	if t == nil {
		return enc.BeginComputePass(nil)
	}
	if t.used+2 > timingQueries {
		t.overflow = true
		return enc.BeginComputePass(nil)
	}
	q := t.used
	t.used += 2
	t.pending = append(t.pending, q)
	return enc.BeginComputePass(&wgpu.ComputePassDescriptor{TimestampWrites: &wgpu.PassTimestampWrites{QuerySet: t.qs, BeginningOfPassWriteIndex: q, EndOfPassWriteIndex: q + 1}})
}

// submitSlot is where a submission's timed passes start; resolveTimes resolves the queries the
// submission wrote since and moves the next submission to a fresh slot.
func (b *Backend) submitSlot() uint32 {
	t := b.timer
	if t == nil {
		return 0
	}
	// A submission that failed to encode left its queries unresolved: they are not counted.
	t.pending = t.pending[:0]
	t.used = (t.used + timingSlot - 1) / timingSlot * timingSlot
	return t.used
}

func (b *Backend) resolveTimes(enc *wgpu.CommandEncoder, first uint32) error {
	t := b.timer
	if t == nil || t.used == first {
		return nil
	}
	if err := enc.TryResolveQuerySet(t.qs, first, t.used-first, t.resolved.buf, 8*uint64(first)); err != nil {
		return fmt.Errorf("resolve timestamps: %w", err)
	}
	t.pairs = append(t.pairs, t.pending...)
	t.pending = t.pending[:0]
	return nil
}

// GPUTime returns the device time of the compute passes submitted since the last call (or since
// timing was turned on), waiting for them (engine.GPUTimer).
func (b *Backend) GPUTime() (time.Duration, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(); err != nil {
		return 0, err
	}
	t := b.timer
	if t == nil {
		return 0, fmt.Errorf("webgpu: GPU timing is off")
	}
	defer func() { t.used, t.pairs, t.pending, t.overflow = 0, nil, nil, false }()
	if t.overflow {
		return 0, fmt.Errorf("webgpu: more than %d compute passes since the last GPUTime: some went untimed", timingQueries/2)
	}
	if t.used == 0 {
		return 0, nil
	}
	raw := make([]byte, 8*t.used)
	if err := b.read(t.resolved, 0, raw); err == ErrIndex {
		// The fault belongs to the timed launches: raise the flag again for the caller's next read.
		if err := b.queue.TryWriteBuffer(b.fault, 0, []byte{1, 0, 0, 0}); err != nil {
			return 0, fmt.Errorf("webgpu: timestamps: %w", err)
		}
	} else if err != nil {
		return 0, fmt.Errorf("webgpu: timestamps: %w", err)
	}
	period := float64(b.queue.GetTimestampPeriod())
	var ns float64
	for _, q := range t.pairs {
		begin, end := binary.LittleEndian.Uint64(raw[8*q:]), binary.LittleEndian.Uint64(raw[8*q+8:])
		if end < begin {
			return 0, fmt.Errorf("webgpu: a pass ended (%d) before it began (%d)", end, begin)
		}
		ns += float64(end-begin) * period
	}
	return time.Duration(ns), nil
}
