package gateway

// SetPassBudget sets how many deliveries one loop pass queues from fan-out
// jobs, for tests of backlogs that span passes; it returns the old value.
func SetPassBudget(n int) int {
	old := passBudget
	passBudget = n
	return old
}
