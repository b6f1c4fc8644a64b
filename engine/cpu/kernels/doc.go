// Package kernels holds lathe's CPU reference kernels for every non-matmul op a Llama-family
// transformer needs to train adapters and to generate: RMSNorm, RoPE, causal grouped-query
// attention, SiLU/SwiGLU, softmax, embedding, cross-entropy, IA3 column scaling, elementwise ops,
// reductions and AdamW, each a forward and, where it carries gradient, a backward.
//
// These kernels are the oracle every GPU kernel is checked against, so they favour exactness over
// speed: tensors are stored as float32, but every sum that runs long (norms, softmax denominators,
// dot products, reductions over rows or tokens) is accumulated in float64 and rounded once.
//
// Conventions, shared by every kernel:
//   - Tensors are row-major []float32 (ids and targets []int32); shapes are written llm.c style,
//     e.g. x: [rows, dim].
//   - Outputs are fully written; nothing assumes they arrive zeroed.
//   - A slice shorter than its shape says is a programmer error and panics with the kernel's name
//     and the sizes. Data-dependent failures (a token id or target out of range) are returned as
//     errors by the kernels that can meet them.
//   - Work is split across runtime.GOMAXPROCS(0) goroutines when it is large enough. Results are
//     bitwise identical for any number of goroutines: parallel loops write disjoint outputs, and
//     reductions either run over fixed-size chunks combined in chunk order or give each goroutine
//     whole output elements summed in a fixed order.
//   - A kernel may run in place (an output slice equal to an input slice of the same shape) only
//     where its documentation says "may be x"; otherwise outputs must not overlap inputs.
package kernels
