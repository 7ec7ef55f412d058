//go:build race

package gateway_test

// raceEnabled is true under the race detector, which slows everything
// several times over: timing comparisons are not meaningful there.
const raceEnabled = true
