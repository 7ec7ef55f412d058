package gateway

import "time"

// LameDuck puts the server into lame-duck mode: new TCP and WebSocket clients
// are refused, /healthz answers 503 "draining" (so a load balancer stops
// sending), and the
// open connections are closed spread evenly over window, so their clients
// reconnect to other nodes gradually instead of all at once. It returns at
// once; the shedding runs in the background until done or until Stop.
func (s *Server) LameDuck(window time.Duration) {
	if !s.draining.CompareAndSwap(false, true) {
		return
	}
	victims := s.snapshot()
	if len(victims) == 0 {
		return
	}
	// Close in small steps: one step every 50 ms, each taking its share.
	const step = 50 * time.Millisecond
	steps := int(window / step)
	if steps < 1 {
		steps = 1
	}
	go func() {
		t := time.NewTicker(step)
		defer t.Stop()
		done := 0
		for i := 1; i <= steps && !s.stopped.Load(); i++ {
			upto := len(victims) * i / steps
			for ; done < upto; done++ {
				victims[done].Close(reasonLameDuck)
			}
			if done == len(victims) {
				return
			}
			<-t.C
		}
	}()
}

// Draining reports whether the server is in lame-duck mode or stopping.
func (s *Server) Draining() bool { return s.draining.Load() }
