//go:build lathe_lite

package train

// PlotLoss is left out of the lite build (-tags lathe_lite), which keeps gonum's plot packages out
// of the binary; it returns ErrNoPlot and the trainer writes no loss.png.
func PlotLoss(path string, steps []StepMetrics, evals []EvalMetrics) error { return ErrNoPlot }
