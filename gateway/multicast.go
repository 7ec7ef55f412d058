package gateway

import (
	"jim/codec"
	"jim/dispatch"
)

// SendMany implements dispatch.Multicaster: it queues m on every connection
// of conns and appends to failed the indexes of those that cannot take it
// (closed, or not a TCP or WebSocket client). The connections are split by event loop and each loop
// gets one job, which it runs at the start of its next pass; the caller
// touches each connection once, to read which loop it is on and whether it
// is still open.
//
// A connection that turns into a slow consumer while the job runs is
// closed, not reported: it was open and under its cap when m was handed
// over, as it would have been a moment earlier with Send.
func (s *Server) SendMany(conns []dispatch.Conn, m *codec.Outbound, failed []int) []int {
	type perLoop struct {
		l     *loopState
		conns *[]*conn
	}
	var loops []perLoop
	last := -1
	for i, x := range conns {
		c, ok := x.(*conn)
		if !ok {
			if !x.Send(m) {
				failed = append(failed, i)
			}
			continue
		}
		if p := codec.Proto(c.proto.Load()); c.isClosed() || (p != codec.ProtoTCP && p != codec.ProtoWS) {
			failed = append(failed, i)
			continue
		}
		// Consecutive connections are often on the same loop; otherwise a
		// linear scan of a handful of loops.
		if last < 0 || loops[last].l != c.loop {
			last = -1
			for k := range loops {
				if loops[k].l == c.loop {
					last = k
					break
				}
			}
			if last < 0 {
				loops = append(loops, perLoop{c.loop, getConnList()})
				last = len(loops) - 1
			}
		}
		*loops[last].conns = append(*loops[last].conns, c)
	}
	for _, pl := range loops {
		pl.l.multicast(m, pl.conns)
	}
	return failed
}
