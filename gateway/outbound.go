package gateway

import (
	"context"
	"math"
	"slices"
)

// A server-wide bound on what waits to be written.
//
// MaxOutbound caps one connection, but not how many connections sit at
// their cap at once. Members of a group that never read make each message
// posted to it pile up at every one of them: 2,000 such connections and one
// sender of 60 KB group messages took jimd to 8.6 GB of RSS before the last
// of them passed its 4 MiB cap. So gnet's outbound buffers are also counted
// together: each connection may hold outFree bytes uncounted, one holding
// more is charged all it holds, and as soon as a write takes the total
// over MaxOutboundTotal, a pass on that loop disconnects its connections
// furthest behind, as slow consumers, until the total is under the bound
// again or the loop holds no more than its share of the bound: the worst
// offenders go first, and a client a little behind is left alone. The
// count is what gnet held after the connection's last write; a connection
// that drains without being written to again is brought up to date by the
// same pass, which also runs once a second.

// outFree is what a connection may have waiting in gnet without being
// counted: most never have anything waiting, the kernel takes it.
const outFree = 64 << 10

// underPressure reports whether what all connections hold waiting is over
// MaxOutboundTotal.
func (s *Server) underPressure() bool {
	return s.opts.MaxOutboundTotal > 0 && s.outQueued.Load() > s.opts.MaxOutboundTotal
}

// relieve queues the pass on l unless one is queued already.
func (l *loopState) relieve() {
	if l.outPass.CompareAndSwap(false, true) {
		if err := l.el.Execute(context.Background(), outRefresh{l}); err != nil {
			l.outPass.Store(false) // shutting down
		}
	}
}

// trackOut records that c holds n bytes in gnet after a write. Runs on c's
// loop, which owns loop.outHeld.
func (s *Server) trackOut(c *conn, n int) {
	l := c.loop
	if n <= outFree && len(l.outHeld) == 0 {
		return // the common case: nothing waits anywhere on the loop
	}
	prev, tracked := l.outHeld[c]
	if n <= outFree {
		if tracked {
			s.outQueued.Add(-int64(prev))
			l.outSum -= int64(prev)
			delete(l.outHeld, c)
		}
		return
	}
	if l.outHeld == nil {
		l.outHeld = make(map[*conn]int)
	}
	l.outHeld[c] = n
	l.outSum += int64(n - prev)
	s.outQueued.Add(int64(n - prev))
	l.outTracked.Store(int32(len(l.outHeld)))
}

// releaseOut returns what a closing connection was charged.
func (s *Server) releaseOut(c *conn) {
	l := c.loop
	if n, ok := l.outHeld[c]; ok {
		s.outQueued.Add(-int64(n))
		l.outSum -= int64(n)
		delete(l.outHeld, c)
		l.outTracked.Store(int32(len(l.outHeld)))
	}
}

// outRefresh is the pass over a loop's counted connections: once a second,
// and as soon as a write takes the total over the bound.
type outRefresh struct{ l *loopState }

// refreshOut queues the pass on every loop that counts a connection. It runs
// on the clock goroutine.
func (s *Server) refreshOut() {
	if s.opts.MaxOutboundTotal <= 0 {
		return
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	for _, l := range s.loops {
		if l.outTracked.Load() > 0 {
			l.relieve()
		}
	}
}

// Run implements gnet.Runnable: on the loop, it brings the counts up to
// date and, over the bound, disconnects the loop's connections furthest
// behind until the total is under it again or the loop holds no more than
// its share of it.
func (r outRefresh) Run(context.Context) error {
	l := r.l
	s := l.srv
	l.outPass.Store(false)
	var behind []*conn
	for c := range l.outHeld {
		if c.isClosed() {
			// Closing: what gnet holds for it goes with it, so it no
			// longer counts against anyone else.
			s.releaseOut(c)
			continue
		}
		n := c.gc.OutboundBuffered()
		c.mu.Lock()
		c.buffered = int32(min(n, math.MaxInt32))
		c.mu.Unlock()
		s.trackOut(c, n)
		if n > outFree {
			behind = append(behind, c)
		}
	}
	l.outTracked.Store(int32(len(l.outHeld)))
	if !s.underPressure() {
		return nil
	}
	// Each loop gives up its share of the excess only: a loop holding
	// little cuts nothing, however far over the others take the total.
	s.loopsMu.Lock()
	share := s.opts.MaxOutboundTotal / int64(max(1, len(s.loops)))
	s.loopsMu.Unlock()
	slices.SortFunc(behind, func(a, b *conn) int { return l.outHeld[b] - l.outHeld[a] })
	for _, c := range behind {
		if !s.underPressure() || l.outSum <= share {
			break
		}
		s.releaseOut(c)
		c.mu.Lock()
		c.setClosed()
		if c.reason == 0 {
			c.reason = internReason(reasonSlowConsumer)
		}
		c.mu.Unlock()
		c.slow()
	}
	return nil
}
