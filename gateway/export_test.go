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

// RingSends is how many sends the server's loops made through io_uring,
// and how many of them the socket did not take whole.
func RingSends(s *Server) (sends, short uint64) { return s.ringSends.Load(), s.ringShort.Load() }

// RingAvailable reports whether this kernel lets the server use io_uring.
func RingAvailable() bool {
	r, err := newRing(8)
	if err != nil {
		return false
	}
	r.close()
	return true
}

// SetSocketSendBuffer sets SO_SNDBUF of the connections of servers started
// afterwards (0: the kernel's autotuning) and returns a function that
// restores it: a small one fills, as a slow reader's does, within a test.
func SetSocketSendBuffer(n int) (restore func()) {
	old := sockSendBuf
	sockSendBuf = n
	return func() { sockSendBuf = old }
}

// InboundWaits is how many reads the server left undecoded because the
// frame they belong to was not whole yet.
func InboundWaits(s *Server) uint64 { return s.waits.Load() }

// HandshakeSteps is how many TLS handshake steps ran on the workers.
func HandshakeSteps(s *Server) uint64 { return s.hsSteps.Load() }

// StallHandshakes makes every TLS handshake step wait until release is
// called, as when the workers are busy.
func StallHandshakes() (release func()) {
	gate := make(chan struct{})
	wait := func() { <-gate }
	hsStepHook.Store(&wait)
	return func() { hsStepHook.Store(nil); close(gate) }
}
