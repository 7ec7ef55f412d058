package gateway

import (
	"math"

	"github.com/panjf2000/gnet/v2"

	"jim/codec"
)

// heldFree is what a connection may hold in inbound bytes not yet decoded
// (a frame still arriving, pipelined requests waiting their turn) without
// drawing on the server-wide budget. Chat traffic stays under it, and so do
// the frames of a connection that has not logged in (MaxPreAuthBody), so
// the bookkeeping below runs only for the rare large frame.
const heldFree = 16 << 10

// reasonInboundBudget closes a connection whose partial frame would take the
// server over MaxInboundPending.
const reasonInboundBudget = "inbound_budget"

// heldConn is what the loop knows of a connection holding more than
// heldFree: its charge against the budget, and how many inbound bytes the
// frame it waits for needs in all (0: unknown), so that reads before then
// skip decoding.
type heldConn struct {
	charged int
	need    int
}

// holdInbound charges what c holds after a read against the server-wide
// budget and reports whether c may keep it. Every connection may hold
// heldFree; a connection holding more is charged all it holds, and one
// that grows while the total is over the budget is refused: answered
// "busy" under its frame's command (10101, WebSocket 1013, HTTP 503) and
// closed, its bytes dropped at once. Without the budget, a few thousand
// logged-in peers each sending all but the last byte of a maximum frame
// held gigabytes (600 of them, 2.5 GB of RSS: gnet's buffer grows by
// doubling, and each read copied it whole until waitInbound skipped them).
//
// rest, when not nil, is what c holds, from the frame it waits for: a
// plaintext TCP or WebSocket frame's length is kept, so that later reads
// skip gnet's Peek until the frame is whole (waitInbound).
//
// Runs on c's loop, which owns loop.held.
func (s *Server) holdInbound(c *conn, held int, rest []byte) bool {
	l := c.loop
	if held <= heldFree && len(l.held) == 0 {
		return true // the common case: nothing large is arriving on the loop
	}
	prev, tracked := l.held[c]
	if held <= heldFree || c.isClosed() {
		if tracked {
			s.pending.Add(-int64(prev.charged))
			delete(l.held, c)
		}
		return true
	}
	if l.held == nil {
		l.held = make(map[*conn]heldConn)
	}
	hc := heldConn{charged: held, need: prev.need}
	if rest != nil {
		hc.need = frameNeed(c, rest)
	}
	l.held[c] = hc
	total := s.pending.Add(int64(held - prev.charged))
	if held <= prev.charged || s.opts.MaxInboundPending < 0 || total <= s.opts.MaxInboundPending {
		return true
	}
	s.pending.Add(-int64(held))
	delete(l.held, c)
	return false
}

// frameNeed is how many bytes c must hold in gnet's buffer before the frame
// at the start of rest can be decoded, or 0 where that is not known (HTTP,
// TLS, a header not yet whole).
func frameNeed(c *conn, rest []byte) int {
	if c.tls != nil {
		return 0
	}
	switch c.state {
	case stateTCP:
		if n, ok := codec.TCPFrameLen(rest); ok && n <= math.MaxInt32 {
			return int(n)
		}
	case stateWS, stateWSEcho:
		if n, ok := codec.WSFrameLen(rest); ok && n <= math.MaxInt32 {
			return int(n)
		}
	}
	return 0
}

// waitInbound handles a read on a plaintext connection that cannot decode
// anything yet: one waiting for the rest of a large frame, or an HTTP
// connection whose pipelined requests wait for an API reply. It reports
// whether it did (skip) and, if so, whether c stays open. Skipping matters:
// gnet's Peek copies everything held into one slice on every read, so a
// megabyte frame trickled in a kilobyte at a time cost the loop about
// 140 ms of copying.
func (s *Server) waitInbound(c *conn, gc gnet.Conn) (skip, keep bool) {
	busy := c.state == stateHTTP && c.httpBusy()
	if !busy && len(c.loop.held) == 0 {
		return false, true
	}
	hc, tracked := c.loop.held[c]
	if !busy && (!tracked || hc.need == 0) {
		return false, true
	}
	n := gc.InboundBuffered()
	if !busy && n >= hc.need {
		return false, true
	}
	c.lastActive.Store(int32(s.wheel.now.Load()))
	s.waits.Add(1)
	if !s.holdInbound(c, n+wsHeld(c), nil) {
		head, _ := gc.Peek(min(n, 64))
		s.refuseInbound(c, head)
		_, _ = gc.Discard(n)
	}
	return true, true
}

// releaseInbound returns what a closing connection was charged.
func (s *Server) releaseInbound(c *conn) {
	if hc, ok := c.loop.held[c]; ok {
		s.pending.Add(-int64(hc.charged))
		delete(c.loop.held, c)
	}
}

// wsHeld is the memory of a WebSocket message c is reassembling.
func wsHeld(c *conn) int {
	if c.ws == nil {
		return 0
	}
	return c.ws.Buffered()
}

// refuseInbound answers the frame c could not be allowed to hold, as busy,
// and closes c after the answer; rest is what c holds, starting at the
// frame.
func (s *Server) refuseInbound(c *conn, rest []byte) {
	s.metrics.inboundRefused.Inc()
	switch c.state {
	case stateTCP:
		if f, ok := codec.PeekTCPHeader(rest); ok {
			rc := replyCmd(f.Cmd)
			c.sendLast(codec.AppendTCP(nil, rc, f.Seq, f.HasSeq, codec.StatusResp(rc, codec.StatusBusy)), reasonInboundBudget)
			return
		}
	case stateWS, stateWSEcho:
		// 1013: try again later (IANA WebSocket close code registry).
		c.sendLast(codec.AppendWSClose(nil, 1013, "server busy"), reasonInboundBudget)
		return
	case stateHTTP:
		if c.httpBusy() {
			// A reply to an earlier request is pending: a 503 now would
			// answer that request.
			break
		}
		s.metrics.httpRequests.WithLabelValues("bad", "503").Inc()
		c.sendLast(codec.AppendResponse(nil, 503, "text/plain; charset=utf-8", []byte(httpReason(503)+"\n"), false), reasonInboundBudget)
		return
	}
	c.closeNow(reasonInboundBudget)
}
