//go:build mpi

package dist_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/dist"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

var (
	buildOnce sync.Once
	binDir    string
	latheBin  string
	buildErr  error
)

// TestMain gives the tests one lathe binary, built with -tags mpi by the first that needs it.
func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "lathe-mpi-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	latheBin = filepath.Join(binDir, "lathe")
	code := m.Run()
	// A benchmark run under mpirun opened MPI: end it cleanly on every rank.
	dist.Finalize()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// mpiJob is what the tests below share: lathe built with -tags mpi, mpirun, a tiny model and data.
type mpiJob struct {
	lathe, mpirun, dir, model, data string
}

// setup builds lathe with MPI and writes the model and data; without mpirun it skips, or fails
// under LATHE_REQUIRE_MPI=1 (CI).
func setup(t *testing.T) mpiJob {
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		if os.Getenv("LATHE_REQUIRE_MPI") == "1" {
			t.Fatal("mpirun is missing and LATHE_REQUIRE_MPI=1: install openmpi-bin and libopenmpi-dev")
		}
		t.Skip("mpirun is missing (apt-get install openmpi-bin libopenmpi-dev)")
	}
	buildOnce.Do(func() {
		var out []byte
		out, buildErr = exec.Command("go", "build", "-tags", "mpi", "-o", latheBin, "../cmd/lathe").CombinedOutput()
		if buildErr != nil {
			buildErr = fmt.Errorf("go build -tags mpi: %w: %s", buildErr, out)
		}
	})
	require.NoError(t, buildErr)
	dir := t.TempDir()
	j := mpiJob{lathe: latheBin, mpirun: mpirun, dir: dir, model: filepath.Join(dir, "tiny"), data: filepath.Join(dir, "facts.jsonl")}
	j.run(t, nil, "init-model", "--out", j.model)
	j.run(t, nil, "init-data", "--out", j.data, "--kind", "facts")
	return j
}

// args are `lathe train`'s flags of these tests: no dropout, so that the ranks' sum is the single
// process's gradient to float tolerance.
func (j mpiJob) trainArgs(out string, extra ...string) []string {
	return append([]string{"train", "--model", j.model, "--data", j.data, "--out", out, "--method", "lora", "--device", "cpu",
		"--batch", "4", "--seq", "32", "--lr", "1e-2", "--warmup", "1", "--dropout", "0", "--quiet"}, extra...)
}

// run runs lathe (under mpirun with the arguments mpi, when not nil) and returns the last line of
// its output, decoded.
func (j mpiJob) run(t *testing.T, mpi []string, args ...string) map[string]any {
	t.Helper()
	var cmd *exec.Cmd
	if mpi != nil {
		cmd = exec.Command(j.mpirun, append(append(mpi, j.lathe), args...)...)
	} else {
		cmd = exec.Command(j.lathe, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "%v: %s", cmd.Args, stderr.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var last map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last), "last line is JSON: %q", stdout.String())
	for _, l := range lines[:len(lines)-1] {
		require.False(t, strings.HasPrefix(l, "{"), "one JSON line: only rank 0 prints: %q", stdout.String())
	}
	return last
}

func np(n int, extra ...string) []string {
	return append([]string{"--allow-run-as-root", "--oversubscribe", "-np", strconv.Itoa(n)}, extra...)
}

func losses(t *testing.T, out string) []float64 {
	steps, _, err := train.ReadMetrics(filepath.Join(out, "metrics.jsonl"))
	require.NoError(t, err)
	var l []float64
	for _, s := range steps {
		l = append(l, s.Loss)
	}
	return l
}

func adapter(t *testing.T, dir, modelDir string) map[string][]float32 {
	mc, err := model.LoadConfig(modelDir)
	require.NoError(t, err)
	a, err := peft.Load(dir, mc, cpu.New())
	require.NoError(t, err)
	defer a.Release()
	out := map[string][]float32{}
	for _, p := range a.Params() {
		v, err := p.Tensor.Float32()
		require.NoError(t, err)
		out[p.Key] = v
	}
	return out
}

// TestMPIRunMatchesOneProcess trains with `mpirun -np 2` on localhost and alone on the same global
// batches: the same loss at every step and the same adapter, to float tolerance; the report says
// what was all-reduced.
func TestMPIRunMatchesOneProcess(t *testing.T) {
	j := setup(t)
	one, two := filepath.Join(j.dir, "one"), filepath.Join(j.dir, "two")
	r1 := j.run(t, nil, j.trainArgs(one, "--steps", "8")...)
	r2 := j.run(t, np(2), j.trainArgs(two, "--steps", "8")...)
	c := r2["communication"].(map[string]any)
	require.Equal(t, 2.0, c["ranks"])
	require.Equal(t, 4*(r2["trainable_params"].(float64)+1), c["allreduce_bytes_per_step"])
	require.Greater(t, c["full_finetune_bytes_per_step"], c["allreduce_bytes_per_step"])
	require.Greater(t, c["comm_s_per_step"], 0.0)
	t.Logf("2 ranks: %v", c)

	l1, l2 := losses(t, one), losses(t, two)
	require.Len(t, l2, 8, "rank 0 alone logs")
	for i := range l1 {
		require.InDelta(t, l1[i], l2[i], 1e-4*l1[i], "step %d", i+1)
	}
	require.Less(t, l1[7], l1[0], "it trained")
	require.InDelta(t, r1["loss_end"], r2["loss_end"], 1e-4*r1["loss_end"].(float64))
	require.InDelta(t, r1["eval_loss"], r2["eval_loss"], 1e-4*r1["eval_loss"].(float64))
	a1, a2 := adapter(t, one, j.model), adapter(t, two, j.model)
	require.Equal(t, len(a1), len(a2))
	for k, w := range a1 {
		var maxAbs, maxDiff float64
		for i := range w {
			maxAbs = math.Max(maxAbs, math.Abs(float64(w[i])))
			maxDiff = math.Max(maxDiff, math.Abs(float64(w[i]-a2[k][i])))
		}
		require.Greater(t, maxAbs, 0.0)
		require.LessOrEqual(t, maxDiff, 1e-4*maxAbs+1e-6, "%s", k)
	}
}

// rankPID finds the process of rank rank among those mpirun started with LATHE_MPI_TEST=mark.
func rankPID(mark string, rank int) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		has := func(kv string) bool {
			for _, v := range vars {
				if v == kv {
					return true
				}
			}
			return false
		}
		if has("LATHE_MPI_TEST="+mark) && has("OMPI_COMM_WORLD_RANK="+strconv.Itoa(rank)) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// TestMPIKilledRankEndsTheJob kills rank 1 with SIGKILL mid-run: mpirun ends every rank and fails
// within a bounded time, the checkpoints left are complete, and the job resumes from the last with
// a different number of ranks (1).
func TestMPIKilledRankEndsTheJob(t *testing.T) {
	j := setup(t)
	out := filepath.Join(j.dir, "killed")
	mark := fmt.Sprint(os.Getpid(), time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, j.mpirun, append(append(np(2, "-x", "LATHE_MPI_TEST="+mark), j.lathe),
		j.trainArgs(out, "--steps", "100000", "--save-every", "2", "--eval-fraction", "0")...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "LATHE_MPI_TEST="+mark)
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Wait for the second checkpoint, then kill rank 1.
	deadline := time.Now().Add(90 * time.Second)
	for {
		cks, _ := train.ListCheckpoints(out)
		if len(cks) >= 2 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the job ended before it was killed: %v: %s", err, stderr.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "no checkpoint in 90 s: %s", stderr.String())
		time.Sleep(50 * time.Millisecond)
	}
	pid := rankPID(mark, 1)
	require.NotZero(t, pid, "rank 1's process")
	killed := time.Now()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	select {
	case err := <-done:
		require.Error(t, err, "mpirun fails when a rank is killed")
		t.Logf("mpirun ended %.2fs after the kill: %v", time.Since(killed).Seconds(), err)
		require.Contains(t, stderr.String(), "signal 9", "mpirun names the killed rank: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the job did not end within 30 s of a rank's death: %s", stderr.String())
	}
	require.Zero(t, rankPID(mark, 0), "rank 0 was ended too")

	// Every checkpoint left is complete and loads; resume from the last with one rank.
	cks, err := train.ListCheckpoints(out)
	require.NoError(t, err)
	require.NotEmpty(t, cks)
	var last *train.Checkpoint
	for _, d := range cks {
		last, err = train.LoadCheckpoint(d)
		require.NoError(t, err, d)
	}
	step := last.State.Step
	require.Positive(t, step)
	res := j.run(t, nil, j.trainArgs(out, "--steps", strconv.Itoa(step+2), "--save-every", "2", "--eval-fraction", "0", "--resume")...)
	require.Equal(t, float64(step), res["resumed_from"])
	require.Equal(t, float64(step+2), res["steps"])
	require.FileExists(t, filepath.Join(out, peft.ConfigFile))
}

// TestMPIFailingRankEndsTheJob: rank 0 fails on its metrics log (a folder stands in its place)
// while rank 1 waits in the first all-reduce; the job ends with rank 0's error and status 1 within
// a bounded time, instead of rank 1 waiting forever.
func TestMPIFailingRankEndsTheJob(t *testing.T) {
	j := setup(t)
	out := filepath.Join(j.dir, "failing")
	require.NoError(t, os.MkdirAll(filepath.Join(out, "metrics.jsonl"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, j.mpirun, append(append(np(2), j.lathe), j.trainArgs(out, "--steps", "4")...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "the job ended by itself: %s", stderr.String())
	t.Logf("ended in %.2fs: %v", time.Since(start).Seconds(), err)
	require.Contains(t, stderr.String(), "lathe: rank 0 of 2: ")
	require.Contains(t, stderr.String(), "metrics")
	_, err = os.Stat(filepath.Join(out, peft.ConfigFile))
	require.True(t, os.IsNotExist(err), "no adapter written")
}
