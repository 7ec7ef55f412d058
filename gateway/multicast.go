package gateway

import (
	"sync"
	"unsafe"

	"jim/codec"
	"jim/dispatch"
)

// SendMany implements dispatch.Multicaster: it queues m on every connection
// of conns and appends to failed the indexes of those that cannot take it
// (closed, or not a TCP or WebSocket client). The connections are split by
// event loop and each loop gets one job, which it runs at the start of its
// next pass.
//
// Dispatch passes the same slice for every message to a group until the
// group changes, so the split is cached per slice and reused as long as no
// connection of the server has closed since it was made: a steady fan-out
// then costs the caller nothing per connection. A connection that turns
// into a slow consumer while the job runs is closed, not reported: it was
// open and under its cap when m was handed over, as it would have been a
// moment earlier with Send.
func (s *Server) SendMany(conns []dispatch.Conn, m *codec.Outbound, failed []int) []int {
	if len(conns) == 0 {
		return failed
	}
	sp := s.splits.get(conns, s.closedGen.Load())
	if sp == nil {
		sp = s.split(conns)
		s.splits.put(sp)
	}
	for i, c := range sp.others {
		if !c.Send(m) {
			failed = append(failed, sp.otherIdx[i])
		}
	}
	for _, pl := range sp.loops {
		pl.l.multicast(m, pl.conns)
	}
	return append(failed, sp.failed...)
}

// split is conns divided by event loop, with what cannot take frames.
type split struct {
	key      []dispatch.Conn // the slice it was made from, kept alive so its address is not reused
	gen      uint64          // Server.closedGen when it was made
	loops    []loopConns
	failed   []int           // indexes of closed and non-push connections
	others   []dispatch.Conn // connections of another implementation
	otherIdx []int
}

type loopConns struct {
	l     *loopState
	conns []*conn // read-only once published
}

func (s *Server) split(conns []dispatch.Conn) *split {
	gen := s.closedGen.Load() // read first: a close after it makes the split stale
	sp := &split{key: conns, gen: gen}
	last := -1
	for i, x := range conns {
		c, ok := x.(*conn)
		if !ok {
			sp.others = append(sp.others, x)
			sp.otherIdx = append(sp.otherIdx, i)
			continue
		}
		if p := codec.Proto(c.proto.Load()); c.isClosed() || (p != codec.ProtoTCP && p != codec.ProtoWS) {
			sp.failed = append(sp.failed, i)
			continue
		}
		// Consecutive connections are often on the same loop; otherwise a
		// linear scan of a handful of loops.
		if last < 0 || sp.loops[last].l != c.loop {
			last = -1
			for k := range sp.loops {
				if sp.loops[k].l == c.loop {
					last = k
					break
				}
			}
			if last < 0 {
				sp.loops = append(sp.loops, loopConns{l: c.loop})
				last = len(sp.loops) - 1
			}
		}
		sp.loops[last].conns = append(sp.loops[last].conns, c)
	}
	return sp
}

// splitCache holds recent splits by the address of their slice's first
// element. It is bounded by the connections its splits hold.
type splitCache struct {
	mu    sync.Mutex
	m     map[*dispatch.Conn]*split
	conns int
}

// maxCachedConns bounds the connections all cached splits hold together.
const maxCachedConns = 1 << 19

func (sc *splitCache) get(conns []dispatch.Conn, gen uint64) *split {
	key := unsafe.SliceData(conns)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sp := sc.m[key]
	if sp == nil || len(sp.key) != len(conns) || sp.gen != gen {
		return nil
	}
	return sp
}

func (sc *splitCache) put(sp *split) {
	key := unsafe.SliceData(sp.key)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.m == nil {
		sc.m = make(map[*dispatch.Conn]*split)
	}
	if old := sc.m[key]; old != nil {
		sc.conns -= len(old.key)
	}
	// Over the bound, drop splits made before the last close (useless),
	// then arbitrary ones (map order) until the new split fits; a dropped
	// split is only rebuilt on its next use.
	for pass := 0; pass < 2 && sc.conns+len(sp.key) > maxCachedConns; pass++ {
		for k, v := range sc.m {
			if sc.conns+len(sp.key) <= maxCachedConns {
				break
			}
			if pass == 0 && v.gen == sp.gen {
				continue
			}
			delete(sc.m, k)
			sc.conns -= len(v.key)
		}
	}
	sc.m[key] = sp
	sc.conns += len(sp.key)
}
