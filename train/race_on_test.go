//go:build race

package train

// raceEnabled: the tests run under the race detector, 5-10× slower.
const raceEnabled = true
