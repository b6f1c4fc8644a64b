package engine

import "sync/atomic"

// Counting wraps a backend and counts what crosses between the host and the device: submissions
// (Run, and runs of prepared launch lists), the kernel launches they carry, host reads and
// writes. Benchmarks and tests measure a step's traffic with it: load the model on the wrapper
// and every program, tensor and read goes through it.
type Counting struct {
	Backend
	submissions, launches, reads, writes, readBytes atomic.Int64
}

// Counts are a snapshot of a Counting backend's counters.
type Counts struct {
	Submissions, Launches, Reads, Writes int64
	// ReadBytes is the number of bytes the reads brought back.
	ReadBytes int64
}

// Sub is c − o, what happened between two snapshots.
func (c Counts) Sub(o Counts) Counts {
	return Counts{c.Submissions - o.Submissions, c.Launches - o.Launches, c.Reads - o.Reads, c.Writes - o.Writes, c.ReadBytes - o.ReadBytes}
}

// NewCounting wraps b.
func NewCounting(b Backend) *Counting { return &Counting{Backend: b} }

// Counts returns the counters so far.
func (c *Counting) Counts() Counts {
	return Counts{c.submissions.Load(), c.launches.Load(), c.reads.Load(), c.writes.Load(), c.readBytes.Load()}
}

// Run counts one submission of len(launches) launches.
func (c *Counting) Run(launches []Launch) error {
	c.submissions.Add(1)
	c.launches.Add(int64(len(launches)))
	return c.Backend.Run(launches)
}

// Read counts one host read.
func (c *Counting) Read(src Buffer, off int64, dst []byte) error {
	c.reads.Add(1)
	c.readBytes.Add(int64(len(dst)))
	return c.Backend.Read(src, off, dst)
}

// Write counts one host write.
func (c *Counting) Write(dst Buffer, off int64, src []byte) error {
	c.writes.Add(1)
	return c.Backend.Write(dst, off, src)
}

// Prepare prepares on the wrapped backend; each run of the result counts one submission.
func (c *Counting) Prepare(launches []Launch) (Executable, error) {
	ex, err := Prepare(c.Backend, launches)
	if err != nil {
		return nil, err
	}
	return &countedExec{ex, c, int64(len(launches))}, nil
}

type countedExec struct {
	Executable
	c *Counting
	n int64
}

func (e *countedExec) Run() error {
	e.c.submissions.Add(1)
	e.c.launches.Add(e.n)
	return e.Executable.Run()
}
