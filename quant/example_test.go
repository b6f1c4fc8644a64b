package quant_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/quant"
)

// Quantize a weight to NF4 in blocks of 64 as bitsandbytes does, and expand it back.
func ExampleQuantize() {
	w := make([]float32, 128)
	for i := range w {
		w[i] = float32(i%7-3) / 3 // values in [-1, 1]
	}
	q, err := quant.Quantize(w, []int{2, 64}, quant.NF4, 64, false)
	if err != nil {
		panic(err)
	}
	back, _ := q.Dequantize()
	fmt.Printf("%d bytes of codes, %d block scales, %.1f bits a weight\n", len(q.Packed), len(q.Absmax), q.BitsPerParam())
	fmt.Printf("w[1] = %.4f → %.4f\n", w[1], back[1])
	// Output:
	// 64 bytes of codes, 2 block scales, 4.5 bits a weight
	// w[1] = -0.6667 → -0.6962
}
