//go:build mpi

package dist_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lathe-ml/lathe/dist"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/synth"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/train"
)

// llama1B is Llama 3.2 1B's shape (tied embeddings).
var llama1B = model.Config{VocabSize: 128256, HiddenSize: 2048, IntermediateSize: 8192, NumLayers: 16, NumHeads: 32,
	NumKVHeads: 8, HeadDim: 64, TieWordEmbeddings: true, MaxPositionEmbeddings: 131072, RMSNormEps: 1e-5, RopeTheta: 500000}

// BenchmarkAllReduce times the step's one all-reduce, of the fused adapter gradients (all-linear
// LoRA) and the loss, for the demo's tiny model and a 1B-shaped one. Run it on every rank with a
// fixed count, so that the ranks call it alike:
//
//	go test -tags mpi -c -o dist.test ./dist/
//	mpirun --allow-run-as-root --oversubscribe -np 2 ./dist.test -test.run '^$' -test.bench AllReduce -test.benchtime 50x
func BenchmarkAllReduce(b *testing.B) {
	comm, err := dist.Open()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if _, err := synth.Write(filepath.Join(dir, "tiny"), synth.Options{Preset: synth.Presets["tiny"], Seed: 1}); err != nil {
		b.Fatal(err)
	}
	tiny, err := model.LoadConfig(filepath.Join(dir, "tiny"))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		m     *model.Config
		ranks []int
	}{{"demo-tiny", tiny, []int{8}}, {"llama-1B", &llama1B, []int{8, 16, 64}}} {
		for _, r := range c.ranks {
			cfg := peft.LoRAConfig()
			cfg.R, cfg.TargetModules = r, peft.Modules{Pattern: peft.AllLinear}
			a, err := peft.New(cfg, c.m, cpu.New(), 1)
			if err != nil {
				b.Fatal(err)
			}
			n := a.NumParams() + 1
			a.Release()
			buf := make([]float32, n)
			for i := range buf {
				buf[i] = 1e-3
			}
			full := 4 * train.BaseParams(c.m)
			b.Run(fmt.Sprintf("%s/r=%d/ranks=%d", c.name, r, comm.Size()), func(b *testing.B) {
				b.SetBytes(4 * n)
				for range b.N {
					if err := comm.AllReduceSum(buf); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(4*n), "bytes/step")
				b.ReportMetric(float64(full), "fullft-bytes/step")
			})
		}
	}
}
