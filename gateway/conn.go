package gateway

import (
	"context"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"

	"jim/codec"
)

// connState is where a connection is in its protocol state machine.
type connState uint8

const (
	stateSniff  connState = iota // first bytes not yet classified
	stateTCP                     // J-IM TCP frames
	stateHTTP                    // HTTP/1.1 requests (keep-alive)
	stateWS                      // WebSocket frames after the 101
	stateWSEcho                  // WebSocket frames on the test-only echo endpoint
)

// Disconnect reasons, also the label values of jim_disconnects_total.
const (
	reasonPeer          = "peer"
	reasonGarbage       = "garbage"
	reasonDecode        = "decode_error"
	reasonTooLarge      = "too_large"
	reasonIdle          = "idle_timeout"
	reasonAuthTimeout   = "auth_timeout"
	reasonSlowConsumer  = "slow_consumer"
	reasonShutdown      = "shutdown"
	reasonTLSDisabled   = "tls_not_configured"
	reasonTLSHandshake  = "tls_handshake"
	reasonTLSError      = "tls_error"
	reasonServer        = "server"
	reasonHTTPClose     = "http_close"
	reasonWSClose       = "ws_close"
	reasonWSProtocol    = "ws_protocol_error"
	reasonHandlerClosed = "handler"
)

// conn is one client connection. Fields without a comment are owned by the
// connection's event loop; the rest say what guards them. It is kept small on
// purpose: an idle logged-in connection must cost well under a kilobyte with
// gnet's own state included.
type conn struct {
	gc     gnet.Conn
	loop   *loopState // set at open, never changed; loop.srv is the server
	id     uint64
	remote net.Addr
	proto  atomic.Uint32 // codec.Proto, read by dispatch from worker goroutines
	opened int32         // wheel clock at open, for the login deadline
	ws     *codec.WSDecoder
	lim    *connLimits // nil unless rate limits are configured
	tls    *tlsConn    // nil unless the connection began with a TLS ClientHello

	// lastActive is the wheel clock (seconds) of the last inbound bytes;
	// 32 bits of seconds outlast any process.
	lastActive atomic.Int32
	// slot is c's index in its loop's conns; guarded by loop.connsMu.
	slot   int32
	userID atomic.Pointer[string]

	mu         sync.Mutex // guards the fields below, up to the loop-owned ones
	out        []byte     // frames queued since the last flush
	buffered   int32      // gnet outbound bytes after the last flush (clamped)
	reason     reasonID   // why it is closing, for metrics
	outShared  bool       // out is a caller's frame, not a buffer of ours
	queued     bool       // on its loop's dirty list
	closeAfter bool       // close once out has been flushed
	loginFree  bool       // no login deadline: HTTP after a whole request, the echo endpoint

	// Loop-owned again; they sit among the small fields above so that the
	// struct stays in its allocation size class.
	state  connState
	ipSlot bool // counted in the per-IP table

	// flags holds three bits in one word, which keeps the struct in its
	// size class: flagHTTPBusy stops request parsing while an asynchronous
	// API reply is pending, so pipelined requests are answered in order;
	// flagClosed means no more writes are accepted (written under mu, read
	// under mu or, by a fan-out deciding whom to count as reached, without
	// it); flagLinger marks a connection in its lingering close.
	flags atomic.Uint32
}

const (
	flagHTTPBusy uint32 = 1 << iota
	flagClosed
	flagLinger // half-closed after its last bytes, draining what still arrives
)

func (c *conn) isClosed() bool { return c.flags.Load()&flagClosed != 0 }
func (c *conn) setClosed() {
	if c.flags.Or(flagClosed)&flagClosed == 0 {
		c.loop.srv.closedGen.Add(1)
	}
}
func (c *conn) httpBusy() bool { return c.flags.Load()&flagHTTPBusy != 0 }

func (c *conn) setHTTPBusy(busy bool) {
	if busy {
		c.flags.Or(flagHTTPBusy)
	} else {
		c.flags.And(^flagHTTPBusy)
	}
}

// ID implements dispatch.Conn.
func (c *conn) ID() uint64 { return c.id }

// Protocol implements dispatch.Conn: "tcp", "ws" or "http".
func (c *conn) Protocol() string { return codec.Proto(c.proto.Load()).String() }

// RemoteAddr implements dispatch.Conn.
func (c *conn) RemoteAddr() string {
	if c.remote == nil {
		return ""
	}
	return c.remote.String()
}

// UserID implements dispatch.Conn.
func (c *conn) UserID() string {
	if p := c.userID.Load(); p != nil {
		return *p
	}
	return ""
}

// SetUserID implements dispatch.Conn.
func (c *conn) SetUserID(id string) {
	if id == "" {
		c.userID.Store(nil)
		return
	}
	c.userID.Store(&id)
}

// Send implements dispatch.Conn: it queues the message framed for this
// connection's protocol and returns at once.
func (c *conn) Send(m *codec.Outbound) bool {
	frame := c.frame(m)
	if frame == nil {
		return false
	}
	return c.sendRaw(frame)
}

// sendRaw queues bytes already framed for the connection. It enforces the
// outbound cap: what is queued here plus what gnet still holds must stay under
// it, or the connection is a slow consumer and is closed with that reason.
func (c *conn) sendRaw(b []byte) bool { return c.queue(b, "") }

// sendLast queues b as the last bytes c writes and closes c after them, as
// one step: a frame sent by another goroutine in between (a reply finishing
// on a worker) would otherwise land behind a WebSocket close frame, where
// RFC 6455 allows nothing.
func (c *conn) sendLast(b []byte, reason string) { c.queue(b, reason) }

// queue is sendRaw, and with a reason also Close, under one lock.
func (c *conn) queue(b []byte, closeReason string) bool {
	c.mu.Lock()
	if c.isClosed() {
		c.mu.Unlock()
		return false
	}
	if !c.appendLocked(b) {
		c.mu.Unlock()
		c.slow()
		return false
	}
	if closeReason != "" {
		c.setClosed()
		c.closeAfter = true
		if c.reason == 0 {
			c.reason = internReason(closeReason)
		}
	}
	enqueue := !c.queued
	c.queued = true
	c.mu.Unlock()
	if enqueue {
		c.loop.markDirty(c)
	}
	return true
}

// appendLocked adds b to what c writes next; c.mu is held and c is open. It
// reports false, having marked c closed as a slow consumer, if b would take
// c over its outbound cap: what is queued here plus what gnet still holds.
// The caller then calls slow once it has unlocked.
func (c *conn) appendLocked(b []byte) bool {
	if limit := c.loop.srv.opts.MaxOutbound; limit > 0 && len(c.out)+int(c.buffered)+len(b) > limit {
		c.setClosed()
		c.reason = internReason(reasonSlowConsumer)
		c.out, c.outShared = nil, false
		return false
	}
	switch {
	case c.out == nil:
		// Most passes carry one frame for a connection (a reply, a
		// delivery): keep a reference to it instead of copying. Frames are
		// never modified once handed over (a fan-out shares one).
		c.out, c.outShared = b, true
	case c.outShared:
		nb := getBuf(len(c.out) + len(b))
		nb = append(nb, c.out...)
		c.out, c.outShared = append(nb, b...), false
	default:
		c.out = append(c.out, b...)
	}
	return true
}

// slow closes c after appendLocked refused a frame.
func (c *conn) slow() {
	c.loop.srv.metrics.slowConsumers.Inc()
	_ = c.gc.Close()
}

// frame is m framed for c's protocol, or nil for a connection that takes no
// pushed frames (HTTP: chat replies go in the API response).
func (c *conn) frame(m *codec.Outbound) []byte {
	switch codec.Proto(c.proto.Load()) {
	case codec.ProtoTCP:
		return m.TCP()
	case codec.ProtoWS:
		return m.WS()
	}
	return nil
}

// Close implements dispatch.Conn: the connection closes after what is already
// queued has been written (a close ack must reach the client first).
func (c *conn) Close(reason string) {
	c.mu.Lock()
	if c.isClosed() {
		c.mu.Unlock()
		return
	}
	c.setClosed()
	c.closeAfter = true
	if c.reason == 0 {
		c.reason = internReason(reason)
	}
	enqueue := !c.queued
	c.queued = true
	c.mu.Unlock()
	if enqueue {
		c.loop.markDirty(c)
	}
}

// closeNow closes without waiting for queued writes; for garbage and
// protocol violations, where the peer deserves nothing more.
func (c *conn) closeNow(reason string) {
	c.mu.Lock()
	if c.reason == 0 {
		c.reason = internReason(reason)
	}
	c.setClosed()
	c.out, c.outShared = nil, false
	c.mu.Unlock()
	_ = c.gc.Close()
}

// flush writes what is queued in one write. It runs on the connection's
// event loop, which also makes it the one place where a TLS connection's
// plaintext is encrypted: the TLS engine is owned by the loop, while sendRaw
// is called from any goroutine.
func (c *conn) flush() {
	out, shared, closeAfter := c.take()
	c.write(out, shared, closeAfter)
}

// take hands over what is queued for c: the bytes, whether they are shared
// (never recycled), and whether c closes after them.
func (c *conn) take() (out []byte, shared, closeAfter bool) {
	c.mu.Lock()
	out, shared = c.out, c.outShared
	c.out, c.outShared = nil, false
	c.queued = false
	closeAfter = c.closeAfter
	c.mu.Unlock()
	return out, shared, closeAfter
}

// write writes out, taken from c, through gnet (or the TLS engine) and then
// closes c if closeAfter, or settles its outbound accounting.
func (c *conn) write(out []byte, shared, closeAfter bool) {
	if len(out) > 0 {
		var err error
		if c.tls != nil {
			err = c.tls.write(out)
		} else {
			// gnet copies what the socket does not take at once into its
			// own outbound buffer, so out can be recycled right away.
			_, err = c.gc.Write(out)
			c.loop.srv.metrics.bytesOut.Add(float64(len(out)))
		}
		if !shared {
			putBuf(out)
		}
		if err != nil {
			closeAfter = true
		}
	}
	if closeAfter {
		if c.tls != nil {
			c.tls.closeNotify()
		}
		if !c.linger() {
			_ = c.gc.Close()
		}
		return
	}
	c.settle()
}

// lingerSeconds is how long a connection closing after its last bytes goes
// on draining what its peer still sends: one to two wheel seconds.
const lingerSeconds = 2

// linger closes c gracefully after its last bytes, as HTTP servers do: it
// shuts down c's sending side, so the peer reads everything and then the
// end of the stream, and goes on reading and dropping whatever the peer
// still sends, until the peer closes or lingerSeconds pass. Closing at once
// is worse for a peer still sending (a frame over the limit, a request body
// refused): its bytes arriving at a closed socket make the kernel answer
// with a reset, which fails the peer's write and may discard the answer
// before the peer reads it. It reports false, and c must be closed at once,
// when the server is stopping or gnet still holds bytes for c (a peer that
// does not read gets no grace). It runs on c's event loop.
func (c *conn) linger() bool {
	s := c.loop.srv
	if s.stopped.Load() || c.gc.OutboundBuffered() > 0 {
		return false
	}
	if err := syscall.Shutdown(c.gc.Fd(), syscall.SHUT_WR); err != nil {
		return false
	}
	c.flags.Or(flagLinger)
	s.releaseInbound(c)
	_, _ = c.gc.Discard(-1)
	// lastActive, which traffic no longer updates, marks the linger's
	// start for the wheel.
	now := s.wheel.now.Load()
	c.lastActive.Store(int32(now))
	s.wheel.add(c, now+lingerSeconds)
	return true
}

func (c *conn) lingering() bool { return c.flags.Load()&flagLinger != 0 }

// settle records what gnet still holds for c after a write and closes c as
// a slow consumer if that is over its outbound cap.
func (c *conn) settle() {
	n := c.gc.OutboundBuffered()
	s := c.loop.srv
	if s.opts.MaxOutboundTotal > 0 {
		s.trackOut(c, n)
		if n > outFree && s.underPressure() {
			c.loop.relieve()
		}
	}
	c.mu.Lock()
	c.buffered = int32(min(n, math.MaxInt32))
	over := !c.isClosed() && s.opts.MaxOutbound > 0 && n > s.opts.MaxOutbound
	if over {
		c.setClosed()
		c.reason = internReason(reasonSlowConsumer)
	}
	c.mu.Unlock()
	if over {
		c.slow()
	}
}

// loopState is the per-event-loop dirty list. Writers from any goroutine add
// a connection once per batch; one task per batch runs on the loop and
// flushes every dirty connection, so a fan-out of many messages costs one
// write per connection per pass, not one per message.
type loopState struct {
	el  gnet.EventLoop
	srv *Server

	// conns lists the loop's open connections, for shutdown and lame duck.
	// A slice with each connection's index in it (conn.slot) costs 8 bytes
	// per connection where a map cost ~30, and removal stays O(1).
	connsMu sync.Mutex
	conns   []*conn

	tlsBuf []byte // loop-owned scratch for decrypted TLS records
	// held maps the loop's connections charged against MaxInboundPending
	// to their charge (see holdInbound); loop-owned. Few connections are
	// ever in it, so it costs idle connections nothing.
	held map[*conn]heldConn
	// outHeld maps the loop's connections with more than outFree waiting in
	// gnet to that amount (see trackOut); loop-owned, and outTracked is its
	// size for the clock goroutine.
	outHeld    map[*conn]int
	outTracked atomic.Int32
	outPass    atomic.Bool // an outRefresh is queued on the loop
	outSum     int64       // the sum of outHeld; loop-owned
	mu         sync.Mutex
	dirty      []*conn
	spare      []*conn
	jobs       []multicastJob // fan-outs to run on the loop (see Server.SendMany)
	spareJobs  []multicastJob
	scheduled  bool
	inline     bool  // the loop is in OnTraffic and flushes the dirty list after it
	fanoutAt   int64 // monotime before which no fan-out pass starts (see paceMin)
	paceArmed  bool  // a timer will schedule a pass

	reads atomic.Uint64 // OnTraffic calls, for TrimStats

	// The loop's io_uring and its scratch (see flushAll); only the loop's
	// goroutine touches them.
	ring     *ring
	ringDead bool
	pending  []pendingWrite
	ringFDs  []int32
	ringBufs [][]byte
	ringRes  []int32
}

func (l *loopState) add(c *conn) {
	l.connsMu.Lock()
	c.slot = int32(len(l.conns))
	l.conns = append(l.conns, c)
	l.connsMu.Unlock()
}

func (l *loopState) remove(c *conn) {
	l.connsMu.Lock()
	if i := int(c.slot); i >= 0 && i < len(l.conns) && l.conns[i] == c {
		last := len(l.conns) - 1
		l.conns[i] = l.conns[last]
		l.conns[i].slot = int32(i)
		l.conns[last] = nil
		l.conns = l.conns[:last]
		c.slot = -1
		if cap(l.conns) > 1024 && len(l.conns) < cap(l.conns)/4 {
			// Give back the array of a loop that held many more.
			l.conns = slices.Clip(slices.Clone(l.conns))
		}
	}
	l.connsMu.Unlock()
}

func (l *loopState) markDirty(c *conn) {
	l.mu.Lock()
	l.dirty = append(l.dirty, c)
	now := !l.inline && l.scheduleLocked()
	l.mu.Unlock()
	if now {
		l.execute()
	}
}

// beginInline and endInline bracket OnTraffic. Replies a handler queues on
// the loop itself (heartbeats, refusals, anything answered without a worker)
// are flushed when OnTraffic returns instead of through a task: a task costs
// an eventfd write, another wake-up of the loop and a queue node of garbage,
// which for a connection that only heartbeats was all the garbage it made.
// Frames other goroutines queue meanwhile ride along.
func (l *loopState) beginInline() {
	l.mu.Lock()
	l.inline = true
	l.mu.Unlock()
}

func (l *loopState) endInline() {
	l.mu.Lock()
	l.inline = false
	var batch []*conn
	if !l.scheduled && len(l.dirty) > 0 {
		// With a task already queued, that task flushes the list.
		batch, l.dirty, l.spare = l.dirty, l.spare[:0], nil
	}
	l.mu.Unlock()
	if batch == nil {
		return
	}
	l.flushAll(batch)
	l.mu.Lock()
	if l.spare == nil {
		l.spare = batch[:0]
	}
	l.mu.Unlock()
}

// multicastJob is one message for many of a loop's connections, queued on
// them by the loop itself: the sender hands over one job per loop instead of
// touching thousands of connections (and their locks, which the loop takes
// too) from another core.
type multicastJob struct {
	m     *codec.Outbound
	conns []*conn // shared by the jobs of one group's messages; never modified
}

func (l *loopState) multicast(m *codec.Outbound, conns []*conn) {
	l.mu.Lock()
	l.jobs = append(l.jobs, multicastJob{m, conns})
	if d := l.fanoutAt - monotime(); d > 0 {
		// Paced: the timer (armed once) starts the pass.
		l.armPaceLocked(d)
		l.mu.Unlock()
		return
	}
	now := l.scheduleLocked()
	l.mu.Unlock()
	if now {
		l.execute()
	}
}

// Fan-out pacing. A pass that writes thousands of connections takes tens of
// milliseconds, and each write costs about the same whether it carries one
// message or several. When messages to a big group arrive a little slower
// than a pass takes, every pass carries one message: the loop writes every
// connection once per message and the machine saturates on write calls,
// with queueing (and latency) growing in the client too. So after a pass
// longer than paceMin, the next fan-out pass waits until paceFactor times
// that pass's duration has passed since it began, at most paceMax: messages
// arriving meanwhile are merged into one write per connection. Replies and
// deliveries to single connections (the dirty list) are never held back.
// Twice the pass, at most 300 ms, gave the lowest p99 of the settings tried
// at both 100,000 and 2,000,000 deliveries a second to a 10,000-member group
// (docs/BENCHMARKS.md, "Round 4"): pacing less writes more and the client
// and server then compete for the cores, pacing more holds messages longer.
var (
	paceMin    = 10 * time.Millisecond
	paceFactor = int64(2)
	paceMax    = int64(300 * time.Millisecond)
)

// armPaceLocked arranges for a pass in d nanoseconds, unless one is armed.
func (l *loopState) armPaceLocked(d int64) {
	if l.paceArmed {
		return
	}
	l.paceArmed = true
	time.AfterFunc(time.Duration(d), func() {
		l.mu.Lock()
		l.paceArmed = false
		now := l.scheduleLocked()
		l.mu.Unlock()
		if now {
			l.execute()
		}
	})
}

// monotime is a monotonic clock in nanoseconds.
func monotime() int64 { return int64(time.Since(clockBase)) }

var clockBase = time.Now()

// scheduleLocked arranges for a pass: it returns true when the caller must
// call execute after unlocking. l.mu is held.
//
// A loop that is busy writing gets no pass until the current one ends, so
// what arrives meanwhile (fan-out jobs above all) is merged into the next
// pass: one write per connection carries every message queued since its
// last one. That is the batching; nothing waits on purpose.
func (l *loopState) scheduleLocked() bool {
	if l.scheduled {
		return false
	}
	l.scheduled = true
	return true
}

// execute queues the flush task on the loop.
func (l *loopState) execute() {
	if err := l.el.Execute(context.Background(), l); err != nil {
		// The engine is shutting down: nothing will be written.
		l.mu.Lock()
		l.scheduled = false
		l.dirty = l.dirty[:0]
		l.mu.Unlock()
	}
}

// Run implements gnet.Runnable: the flush task, on the loop's goroutine.
func (l *loopState) Run(context.Context) error {
	l.mu.Lock()
	start := monotime()
	batch := l.dirty
	l.dirty = l.spare[:0]
	var jobs []multicastJob
	took := start >= l.fanoutAt
	if took {
		jobs, l.jobs = l.jobs, l.spareJobs[:0]
	} else if len(l.jobs) > 0 {
		// Woken for the dirty list while fan-outs wait for their pace.
		l.armPaceLocked(l.fanoutAt - start)
	}
	l.scheduled = false
	l.mu.Unlock()
	done, work := 0, 0
	for done < len(jobs) && work < passBudget {
		// Consecutive messages to the same connections (one group's) are
		// joined once and queued on each connection together.
		list := jobs[done].conns
		k, size := done+1, jobBytes(jobs[done])
		for k < len(jobs) && sameConns(jobs[k].conns, list) {
			n := jobBytes(jobs[k])
			if size+n > passBudget {
				break
			}
			size += n
			k++
		}
		batch = l.fanout(jobs[done:k], batch)
		work += size
		clear(jobs[done:k])
		done = k
	}
	var rest []multicastJob
	if done < len(jobs) {
		// A backlog of fan-outs is worked through over several passes, so
		// the loop keeps reading its connections in between (a sender
		// whose input is not read for seconds stalls).
		rest = slices.Clone(jobs[done:])
		clear(jobs[done:])
	}
	l.flushAll(batch)
	l.mu.Lock()
	l.spare = batch[:0]
	if took {
		// Even when nil: a spare that is also l.jobs would be appended to
		// while the next pass reads it.
		l.spareJobs = jobs[:0]
	}
	if len(jobs) > 0 && rest == nil {
		if d := monotime() - start; d >= int64(paceMin) {
			l.fanoutAt = start + min(paceFactor*d, paceMax)
		}
	}
	again := false
	if rest != nil {
		l.jobs = append(rest, l.jobs...)
		if !l.scheduled {
			l.scheduled, again = true, true
		}
	}
	l.mu.Unlock()
	if again {
		l.execute()
	}
	return nil
}

// passBudget bounds the bytes one pass queues from fan-out jobs, each job
// counted once per connection it goes to; what is left goes to the next
// pass. A pass costs about one write per connection for every flushEarly
// bytes, since the connections share the joined frames. At 2,000,000
// deliveries a second a pass wrote about 40 MB in 127 ms (median; 0.3–1.5 MB
// per ms), so a full 256 MiB pass, which only a backlog fills, is under a
// second of writes: long enough to drain a backlog in one or two passes,
// short enough that the loop soon reads its connections again. (A budget of 100,000 deliveries, about 20 messages for
// a loop holding 5,000 members of one group, kept a backlog from ever
// draining at 200 messages a second.) A variable only so that tests can make
// backlogs span passes.
var passBudget = 256 << 20

// jobBytes is about what j puts on the wire: its message, framed, on each of
// its connections.
func jobBytes(j multicastJob) int { return (len(j.m.JSON) + 14) * len(j.conns) }

// fanout queues the messages of jobs, which share one connection list, on
// each of those connections, and returns batch with those that were not yet
// waiting for this pass's flush.
//
// Every connection of the list gets the same bytes, so the jobs' frames are
// joined once per protocol and each connection holds a reference to the
// joined segments instead of a copy: copying every message into every
// connection's buffer (13%) and clearing the grown buffers (5%) were 18% of
// the server's time at two million deliveries a second.
func (l *loopState) fanout(jobs []multicastJob, batch []*conn) []*conn {
	var segs [2][][]byte // by protocol: TCP, WebSocket
	for _, c := range jobs[0].conns {
		var p int
		switch codec.Proto(c.proto.Load()) {
		case codec.ProtoTCP:
			p = 0
		case codec.ProtoWS:
			p = 1
		default:
			continue
		}
		if segs[p] == nil {
			segs[p] = joinFrames(jobs, p == 1)
		}
		for _, seg := range segs[p] {
			add, full, over, closed := c.queueShared(seg)
			if over {
				c.slow()
				break
			}
			if closed {
				break
			}
			if add {
				batch = append(batch, c)
			}
			if full {
				// Jobs pile up while the loop is busy; writing a
				// connection's share as it grows keeps what waits here
				// (which counts against the outbound cap) from cutting a
				// reader that keeps up. Its place in the batch then finds
				// nothing left to write.
				c.flush()
			}
		}
	}
	return batch
}

// joinFrames returns the frames of jobs' messages (WebSocket frames when ws)
// joined into segments of at most flushEarly bytes, or of one bigger frame;
// a lone frame is its own segment, not a copy.
func joinFrames(jobs []multicastJob, ws bool) [][]byte {
	var segs [][]byte
	for i := 0; i < len(jobs); {
		first := jobs[i].frame(ws)
		k, n := i+1, len(first)
		for k < len(jobs) && n+len(jobs[k].frame(ws)) <= flushEarly {
			n += len(jobs[k].frame(ws))
			k++
		}
		if k == i+1 {
			segs = append(segs, first)
		} else {
			seg := make([]byte, 0, n)
			for _, j := range jobs[i:k] {
				seg = append(seg, j.frame(ws)...)
			}
			segs = append(segs, seg)
		}
		i = k
	}
	return segs
}

// frame is j's message framed for WebSocket when ws, else for J-IM TCP.
func (j multicastJob) frame(ws bool) []byte {
	if ws {
		return j.m.WS()
	}
	return j.m.TCP()
}

// queueShared appends seg, shared by many connections and never modified,
// to c's outbound bytes. add tells that c must join the pass's batch, full
// that it should be written now, over that it went over its outbound cap
// (and is now closed), closed that it was closed already.
func (c *conn) queueShared(seg []byte) (add, full, over, closed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed() {
		return false, false, false, true
	}
	if !c.appendLocked(seg) {
		return false, false, true, false
	}
	// queued means "a pass will flush it": this one, so it joins the
	// batch rather than the loop's dirty list.
	add = !c.queued
	c.queued = true
	return add, len(c.out) >= flushEarly, false, false
}

// sameConns reports whether a and b are the same list (not merely equal).
func sameConns(a, b []*conn) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// flushEarly is how much a pass's fan-out jobs may queue on one connection
// before it is written in the middle of the pass: small enough that the
// buffer comes back to the pool (fresh large buffers cost page faults and
// zeroing per connection), large enough to amortise the write.
const flushEarly = 16 << 10

// Buffers for queued frames. Most batches are small; big ones are not kept, so
// a burst does not pin memory for ever.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

const maxPooledBuf = 64 << 10

func getBuf(n int) []byte {
	if n > maxPooledBuf {
		return make([]byte, 0, n)
	}
	bp := bufPool.Get().(*[]byte)
	return (*bp)[:0]
}

func putBuf(b []byte) {
	if cap(b) > maxPooledBuf {
		return
	}
	b = b[:0]
	bufPool.Put(&b)
}

// reasonID names a disconnect reason in one byte instead of a string header
// in every connection. Reasons are a small fixed vocabulary (the gateway's
// constants and the few the dispatcher passes to Close), interned on first
// use.
type reasonID uint8

var reasons = struct {
	mu    sync.Mutex
	ids   map[string]reasonID
	names []string
}{ids: map[string]reasonID{}, names: []string{""}}

// internReason returns the id of reason, adding it if new. Past 254
// distinct reasons (which the code never produces) the rest share id 255,
// "other".
func internReason(reason string) reasonID {
	if reason == "" {
		return 0
	}
	reasons.mu.Lock()
	defer reasons.mu.Unlock()
	if id, ok := reasons.ids[reason]; ok {
		return id
	}
	if len(reasons.names) == 255 {
		reasons.names = append(reasons.names, "other")
	}
	if len(reasons.names) > 255 {
		return 255
	}
	id := reasonID(len(reasons.names))
	reasons.ids[reason] = id
	reasons.names = append(reasons.names, reason)
	return id
}

// String is the reason's name; "" for none.
func (r reasonID) String() string {
	reasons.mu.Lock()
	defer reasons.mu.Unlock()
	return reasons.names[r]
}
