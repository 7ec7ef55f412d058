package gateway

import "math"

// pendingWrite is a connection's share of a pass, handed to the loop's ring.
type pendingWrite struct {
	c      *conn
	out    []byte
	shared bool
}

// ringEntries is the submission queue of a loop's ring: a pass over more
// connections is submitted in chunks of this many sends. It costs the loop
// about 100 KiB of mapped memory.
const ringEntries = 1024

// flushAll writes every connection of batch, which it clears. Where the
// kernel allows it, the writes of a pass go to the kernel together through
// the loop's io_uring: one system call for up to ringEntries connections
// instead of one each, which is most of what a fan-out pass costs.
func (l *loopState) flushAll(batch []*conn) {
	if len(batch) < 2 || !l.ringReady() {
		for _, c := range batch {
			c.flush()
		}
		clear(batch)
		return
	}
	p := l.pending[:0]
	for _, c := range batch {
		out, shared, closeAfter := c.take()
		// Only bytes that go straight to an idle socket may bypass gnet:
		// behind bytes gnet still holds they would overtake them. TLS
		// needs its engine, and a closing connection its close path.
		if len(out) == 0 || len(out) > math.MaxInt32 || closeAfter || c.tls != nil || c.gc.OutboundBuffered() > 0 {
			c.write(out, shared, closeAfter)
			continue
		}
		p = append(p, pendingWrite{c, out, shared})
	}
	clear(batch)
	if len(p) == 1 {
		p[0].c.write(p[0].out, p[0].shared, false)
	} else if len(p) > 1 {
		l.sendRing(p)
	}
	clear(p)
	l.pending = p[:0]
}

// ringReady reports whether the loop writes through io_uring, setting the
// ring up on first use.
func (l *loopState) ringReady() bool {
	if l.ring != nil {
		return true
	}
	if l.ringDead || l.srv.opts.NoIOURing {
		return false
	}
	r, err := newRing(ringEntries)
	if err != nil {
		l.ringDead = true
		l.srv.ringLog.Do(func() {
			l.srv.opts.Logger.Info("io_uring unavailable; writing each connection with its own call", "err", err)
		})
		return false
	}
	l.ring = r
	return true
}

// sendRing writes p through the ring. The connections are open and on this
// loop: gnet closes a connection only on its loop, so none of their file
// descriptors can have been closed or reused since the pass began.
func (l *loopState) sendRing(p []pendingWrite) {
	fds, bufs, res := l.ringFDs[:0], l.ringBufs[:0], l.ringRes[:0]
	for _, w := range p {
		fds = append(fds, int32(w.c.gc.Fd()))
		bufs = append(bufs, w.out)
		res = append(res, 0)
	}
	l.srv.ringSends.Add(uint64(len(p)))
	if err := l.ring.send(fds, bufs, res); err != nil {
		l.srv.opts.Logger.Warn("io_uring send failed; writing each connection with its own call from now on", "err", err)
		l.ring.close()
		l.ring, l.ringDead = nil, true
	}
	var sent int
	for i, w := range p {
		n := res[i]
		switch {
		case n == uringResultUnknown:
			// Part of it may be on the wire: resending could duplicate
			// bytes inside a frame, so the connection is given up.
			w.c.write(nil, true, true)
		case int(n) == len(w.out):
			sent += len(w.out)
			w.c.settle()
		default:
			// A full socket buffer (a short count or -EAGAIN) or an error:
			// gnet takes the rest, buffering it until the socket drains, or
			// closes the connection on the error.
			l.srv.ringShort.Add(1)
			rest := w.out
			if n > 0 {
				sent += int(n)
				rest = rest[n:]
			}
			w.c.write(rest, true, false)
		}
		if !w.shared {
			putBuf(w.out)
		}
	}
	l.srv.metrics.bytesOut.Add(float64(sent))
	clear(bufs)
	l.ringFDs, l.ringBufs, l.ringRes = fds[:0], bufs[:0], res[:0]
}

// closeRing releases the loop's ring once the loop has stopped.
func (l *loopState) closeRing() {
	if l.ring != nil {
		l.ring.close()
		l.ring = nil
	}
}
