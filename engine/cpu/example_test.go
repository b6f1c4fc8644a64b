package cpu_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/cpu"
)

// A graph is recorded once, differentiated, compiled for a backend and run: here the gradient of
// sum(x·Wᵀ) with respect to a trainable W.
func Example() {
	b := cpu.New()
	g := engine.NewGraph()
	x := g.Input("x", engine.F32, engine.Shape{2, 3})
	w := g.Param("w", engine.F32, engine.Shape{1, 3}, true)
	loss := g.Sum(g.MatMul(x, w, false, true))
	grads, err := g.Backward(loss)
	if err != nil {
		panic(err)
	}
	p, err := engine.Compile(g, b, []*engine.Node{loss, grads[w]}, engine.CompileOptions{})
	if err != nil {
		panic(err)
	}
	xt, _ := engine.FromFloat32(b, engine.Shape{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	wt, _ := engine.FromFloat32(b, engine.Shape{1, 3}, []float32{1, 0, -1})
	_ = p.Bind(x, xt)
	_ = p.Bind(w, wt)
	if err := p.Run(); err != nil {
		panic(err)
	}
	l, _ := p.Float32(loss)
	dw, _ := p.Float32(grads[w])
	fmt.Println("loss", l, "dloss/dw", dw)
	// Output: loss [-4] dloss/dw [5 7 9]
}
