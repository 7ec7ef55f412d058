package gateway

import "time"

// SetPassBudget sets how many bytes one loop pass queues from fan-out
// jobs, for tests of backlogs that span passes; it returns the old value.
func SetPassBudget(n int) int {
	old := passBudget
	passBudget = n
	return old
}

// SetPacing sets the fan-out pacing (see paceMin) for tests and returns a
// function that restores it.
func SetPacing(min, max time.Duration, factor int64) (restore func()) {
	oldMin, oldMax, oldFactor := paceMin, paceMax, paceFactor
	paceMin, paceMax, paceFactor = min, int64(max), factor
	return func() { paceMin, paceMax, paceFactor = oldMin, oldMax, oldFactor }
}
