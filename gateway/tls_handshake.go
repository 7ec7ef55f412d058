package gateway

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// TLS handshakes off the event loop.
//
// A handshake step costs the server a few hundred microseconds of public-key
// work (the key exchange and the certificate signature), a thousand times a
// chat message's decryption. On the loop, a flood of handshakes (an attack,
// or a reconnect storm) delays every established connection of that loop:
// with 64 clients handshaking in a loop, a heartbeat's round trip on a
// plain connection went from 0.08 ms to a median of 11 ms (p99 61 ms).
// So each step of a handshake runs on a small pool of workers, fewer than
// the CPUs, while the loop goes on serving everyone else; the engine's
// records after the handshake are decrypted on the loop as before.
//
// The engine and its output (tlsConn.out) belong to the worker from the
// moment a step is queued (hsBusy) until the loop takes the result (hsDone):
// the loop neither reads the connection's ciphertext (it waits in gnet's
// buffer) nor writes to it. A connection closed meanwhile is marked
// hsClosed, and the worker, not the loop, drops what the step produced.
const (
	hsIdle int32 = iota
	hsBusy
	hsDone
	hsClosed
)

// hsQueue bounds the handshake steps waiting for a worker; a step that finds
// it full runs on the loop, as it would without workers.
const hsQueue = 4096

// hsMaxPending bounds the ciphertext a connection may send while a step of
// its handshake is on a worker: a client's flights are a few kilobytes, and
// anything more (bytes streamed into a handshake while the workers are
// busy) would only pile up unread.
const hsMaxPending = 64 << 10

// hsStepHook, when set (by tests), runs before each handshake step.
var hsStepHook atomic.Pointer[func()]

type hsJob struct {
	c  *conn
	in []byte
}

// startHandshakeWorkers starts the pool when TLS is on; stop ends it once
// the loops, which queue its jobs, have stopped.
func (s *Server) startHandshakeWorkers() (stop func()) {
	n := s.opts.TLSHandshakeWorkers
	if s.tls == nil || n < 0 {
		return func() {}
	}
	if n == 0 {
		// Half the CPUs: a flood of handshakes then leaves the other half
		// to the loops and the dispatcher.
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	s.hsJobs = make(chan hsJob, hsQueue)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range s.hsJobs {
				s.handshakeStep(j)
			}
		}()
	}
	return func() {
		close(s.hsJobs)
		wg.Wait()
	}
}

// offloadHandshake queues ciphertext of a connection whose handshake is not
// complete for a worker. It reports false, having changed nothing, when there
// are no workers or their queue is full.
func (s *Server) offloadHandshake(c *conn, ciphertext []byte) bool {
	if s.hsJobs == nil {
		return false
	}
	t := c.tls
	t.hs.Store(hsBusy) // before the send: the worker may finish at once
	select {
	case s.hsJobs <- hsJob{c: c, in: append([]byte(nil), ciphertext...)}:
		return true
	default:
		t.hs.Store(hsIdle)
		return false
	}
}

// handshakeStep runs on a worker: the engine takes the ciphertext and
// advances the handshake, writing its next flight into t.out, and the loop is
// woken to send it.
func (s *Server) handshakeStep(j hsJob) {
	if hook := hsStepHook.Load(); hook != nil {
		(*hook)()
	}
	t := j.c.tls
	_, _, t.hsErr = t.eng.AppendAndRead(j.in, nil)
	s.hsSteps.Add(1)
	if t.hs.CompareAndSwap(hsBusy, hsDone) {
		_ = j.c.gc.Wake(nil)
		return
	}
	// Closed while the step ran: the loop has let go of the connection.
	if t.out != nil {
		putBuf(t.out)
		t.out = nil
	}
}
