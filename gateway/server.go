package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/dispatch"
	"jim/internal/memtrim"
)

// Handler receives decoded traffic. *dispatch.Dispatcher implements it; every
// method is called on an event loop and must return quickly.
type Handler interface {
	// Handle takes one J-IM TCP frame.
	Handle(c dispatch.Conn, p dispatch.Packet)
	// HandleWS takes one WebSocket data message (its JSON carries the cmd).
	HandleWS(c dispatch.Conn, payload []byte)
	// LoginFromQuery logs in from the upgrade request's query parameters.
	LoginFromQuery(c dispatch.Conn, userID, password, token string)
	// Closed is told of every connection that goes away.
	Closed(c dispatch.Conn)
	// API answers an /api/* request; reply may be called from any goroutine.
	API(r dispatch.APIRequest, reply func(dispatch.APIResponse))
}

// ErrServerClosed is returned by Serve after Stop.
var ErrServerClosed = errors.New("gateway: server closed")

// Server is one jim gateway: a gnet engine and the state around it.
type Server struct {
	gnet.BuiltinEventEngine

	opts    Options
	h       Handler
	metrics *metrics

	eng     gnet.Engine
	started chan struct{} // closed once the engine is listening
	stopped atomic.Bool
	nextID  atomic.Uint64

	loopsMu   sync.Mutex
	ringLog   sync.Once     // io_uring's absence is logged once, not per loop
	ringSends atomic.Uint64 // sends made through io_uring, for tests
	ringShort atomic.Uint64 // of them, sends the socket did not take whole
	loops     map[gnet.EventLoop]*loopState

	wheel     wheel
	hbSeconds int64 // idle timeout in wheel seconds; 0 disables
	auSeconds int64 // login timeout in wheel seconds; 0 disables

	nOpen     atomic.Int64
	pending   atomic.Int64  // inbound bytes charged by holdInbound
	waits     atomic.Uint64 // reads waitInbound left undecoded, for tests
	outQueued atomic.Int64  // outbound bytes charged by trackOut
	perIP     ipCounter
	draining  atomic.Bool // lame duck: refuse new connections, shed old ones

	tls     *serverTLS    // nil without a certificate
	hsJobs  chan hsJob    // handshake steps for the workers; nil without them
	hsSteps atomic.Uint64 // steps the workers ran, for tests
	tlsErr  error         // why the certificate did not load; Serve returns it

	// closedGen counts connections marked closed; cached fan-out splits
	// made before the last close are rebuilt (see SendMany).
	closedGen atomic.Uint64
	splits    splitCache
}

// TrimStats is what the memory trimmer watches: connection opens plus
// closes (a burst of them is what leaves garbage behind), inbound read events
// (how busy the server is), both counted since the start, and the open
// connections.
func (s *Server) TrimStats() memtrim.Stats {
	st := memtrim.Stats{Churn: s.nextID.Load() + s.closedGen.Load(), Open: int(s.nOpen.Load())}
	s.loopsMu.Lock()
	for _, l := range s.loops {
		st.Activity += l.reads.Load()
	}
	s.loopsMu.Unlock()
	return st
}

// New builds a server; Serve starts it. A TLS certificate that does not load
// makes Serve fail at once; Options.Validate reports the same error earlier.
func New(o Options, h Handler) *Server {
	o.setDefaults()
	s := &Server{
		opts:    o,
		h:       h,
		metrics: newMetrics(o.Registry),
		started: make(chan struct{}),
		loops:   make(map[gnet.EventLoop]*loopState),
	}
	o.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jim_inbound_pending_bytes",
		Help: "Inbound bytes held undecoded by connections holding more than 16 KiB each, the amount -max-inbound-pending bounds.",
	}, func() float64 { return float64(s.pending.Load()) }))
	o.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jim_outbound_queued_bytes",
		Help: "Outbound bytes waiting in the server for connections holding more than 64 KiB each, the amount -max-outbound-total bounds.",
	}, func() float64 { return float64(s.outQueued.Load()) }))
	if o.HeartbeatTimeout > 0 {
		s.hbSeconds = int64((o.HeartbeatTimeout + time.Second - 1) / time.Second)
	}
	if o.AuthTimeout > 0 {
		s.auSeconds = int64((o.AuthTimeout + time.Second - 1) / time.Second)
	}
	if o.TLSCertFile != "" || o.TLSKeyFile != "" {
		s.tls, s.tlsErr = newServerTLS(o.TLSCertFile, o.TLSKeyFile)
	}
	if m, ok := h.(interface{ SetMulticaster(dispatch.Multicaster) }); ok {
		m.SetMulticaster(s)
	}
	return s
}

// Registry is the Prometheus registry served at /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.opts.Registry }

// Started is closed once the listener accepts connections.
func (s *Server) Started() <-chan struct{} { return s.started }

// Connections is the number of open connections.
func (s *Server) Connections() int { return int(s.nOpen.Load()) }

// Serve runs the engine until Stop; it blocks. It fails before listening if
// the TLS certificate or key did not load.
func (s *Server) Serve() error {
	if s.tlsErr != nil {
		return s.tlsErr
	}
	loops := s.opts.NumEventLoop
	if loops <= 0 {
		loops = runtime.GOMAXPROCS(0)
	}
	addr := s.opts.Addr
	if !strings.Contains(addr, "://") {
		addr = "tcp://" + addr
	}
	go s.clock()
	stopHandshakes := s.startHandshakeWorkers()
	defer stopHandshakes()
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(loops),
		gnet.WithReuseAddr(true),
		gnet.WithReusePort(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		// Small kernel-facing buffers keep idle connections cheap; gnet grows
		// its ring buffers on demand.
		gnet.WithReadBufferCap(64 << 10),
		gnet.WithWriteBufferCap(64 << 10),
		gnet.WithLogger(gnetLogger{s.opts.Logger}),
	}
	if sockSendBuf > 0 {
		opts = append(opts, gnet.WithSocketSendBuffer(sockSendBuf))
	}
	err := gnet.Run(s, addr, opts...)
	// The loops have stopped: nothing uses their rings any more.
	s.loopsMu.Lock()
	for _, l := range s.loops {
		l.closeRing()
	}
	s.loopsMu.Unlock()
	if s.stopped.Load() {
		return ErrServerClosed
	}
	return err
}

// sockSendBuf, when positive, is SO_SNDBUF of every connection: tests make
// sockets fill with it. Zero leaves the buffer to the kernel's autotuning.
var sockSendBuf int

// Stop stops accepting, closes every connection after its queued writes
// drain (bounded by ShutdownGrace), and stops the engine.
func (s *Server) Stop(ctx context.Context) error {
	if !s.stopped.CompareAndSwap(false, true) {
		return nil
	}
	s.draining.Store(true)
	select {
	case <-s.started:
	default:
		return nil
	}
	for _, c := range s.snapshot() {
		if c.lingering() {
			_ = c.gc.Close()
			continue
		}
		c.Close(reasonShutdown)
	}
	grace, cancel := context.WithTimeout(ctx, s.opts.ShutdownGrace)
	defer cancel()
	for s.nOpen.Load() > 0 {
		select {
		case <-grace.Done():
			goto stop
		case <-time.After(20 * time.Millisecond):
		}
	}
stop:
	return s.eng.Stop(ctx)
}

// OnBoot implements gnet.EventHandler.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.started)
	return gnet.None
}

// OnOpen implements gnet.EventHandler.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	c := &conn{gc: gc, id: s.nextID.Add(1), remote: gc.RemoteAddr(), loop: s.loopFor(gc.EventLoop())}
	now := s.wheel.now.Load()
	c.opened = int32(now)
	c.lastActive.Store(int32(now))
	gc.SetContext(c)
	c.loop.add(c)
	n := s.nOpen.Add(1)
	s.metrics.accepted.Inc()
	s.metrics.connections.WithLabelValues("unknown").Inc()
	// Refusals still went through the bookkeeping above, so OnClose undoes
	// it the same way for every connection.
	switch {
	case s.stopped.Load():
		c.setReason(reasonShutdown)
		return nil, gnet.Close
	case s.opts.MaxConns > 0 && n > int64(s.opts.MaxConns):
		c.setReason(reasonMaxConns)
		return nil, gnet.Close
	}
	if s.opts.MaxConnsPerIP > 0 {
		if !s.perIP.inc(addrOf(c.remote), s.opts.MaxConnsPerIP) {
			c.setReason(reasonMaxConnsIP)
			return nil, gnet.Close
		}
		c.ipSlot = true
	}
	if d := s.firstDeadline(c); d > 0 {
		s.wheel.add(c, d)
	}
	return nil, gnet.None
}

// OnClose implements gnet.EventHandler.
func (s *Server) OnClose(gc gnet.Conn, _ error) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.None
	}
	c.mu.Lock()
	c.setClosed()
	c.out, c.outShared = nil, false
	reason := c.reason.String()
	c.mu.Unlock()
	if reason == "" {
		reason = reasonPeer
	}
	c.loop.remove(c)
	s.releaseInbound(c)
	s.releaseOut(c)
	s.nOpen.Add(-1)
	if c.ipSlot {
		s.perIP.dec(addrOf(c.remote))
	}
	s.metrics.disconnects.WithLabelValues(reason).Inc()
	s.metrics.connections.WithLabelValues(protoLabel(c)).Dec()
	if c.tls != nil {
		c.tls.release()
	}
	if c.state == stateTCP || c.state == stateWS {
		s.h.Closed(c)
	}
	return gnet.None
}

func protoLabel(c *conn) string {
	if c.state == stateSniff {
		return "unknown"
	}
	return codec.Proto(c.proto.Load()).String()
}

// OnTraffic implements gnet.EventHandler: it reads everything buffered and
// runs the connection's state machine over it, under the TLS layer if the
// connection has one.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	c.loop.reads.Add(1)
	c.loop.beginInline()
	a := s.traffic(c, gc)
	c.loop.endInline()
	return a
}

func (s *Server) traffic(c *conn, gc gnet.Conn) gnet.Action {
	if c.lingering() {
		// Its answer is written and its sending side shut: what the peer
		// still sends is dropped unread.
		if n, _ := gc.Discard(-1); n > 0 {
			s.metrics.bytesIn.Add(float64(n))
		}
		return gnet.None
	}
	if c.tls != nil && c.tls.hs.Load() == hsBusy {
		// A handshake step is on a worker; its end wakes c. Meanwhile what
		// arrives waits in gnet's buffer, and a client has nothing large
		// to send before its handshake completes.
		if gc.InboundBuffered() > hsMaxPending {
			c.setReason(reasonTLSHandshake)
			return gnet.Close
		}
		return gnet.None
	}
	if c.tls == nil {
		if skip, keep := s.waitInbound(c, gc); skip {
			if !keep {
				return gnet.Close
			}
			return gnet.None
		}
	}
	buf, _ := gc.Peek(-1)
	if len(buf) == 0 {
		if c.tls != nil {
			// Woken after an asynchronous reply: decrypted requests may
			// be waiting.
			return s.trafficTLS(c, nil)
		}
		return gnet.None
	}
	c.lastActive.Store(int32(s.wheel.now.Load()))
	if c.tls != nil {
		// Ciphertext is taken whole on every read, so each byte is
		// charged once.
		if !s.allowBytes(c, len(buf)) {
			c.setReason(reasonByteRate)
			return gnet.Close
		}
		return s.trafficTLS(c, buf)
	}
	consumed, keep := s.process(c, buf)
	if keep && c.tls == nil && !s.holdInbound(c, len(buf)-consumed+wsHeld(c), buf[consumed:]) {
		s.refuseInbound(c, buf[consumed:])
		consumed = len(buf) // dropped at once: c closes after the answer
	}
	if consumed > 0 {
		s.metrics.bytesIn.Add(float64(consumed))
		_, _ = gc.Discard(consumed)
	}
	// Plaintext is charged as it is consumed: bytes of a frame still
	// arriving stay in gnet's buffer and are seen again on the next read,
	// and charging them on every read charged a large frame trickled in
	// small pieces many times over. What is held unconsumed is bounded by
	// the frame limits and MaxInboundPending.
	if keep && !s.allowBytes(c, consumed) {
		c.setReason(reasonByteRate)
		return gnet.Close
	}
	if !keep {
		return gnet.Close
	}
	if c.tls != nil {
		// The sniffer saw a ClientHello and consumed nothing: from here
		// on the bytes are TLS records.
		return s.trafficTLS(c, buf)
	}
	return gnet.None
}

// process runs the state machine over buf and returns how many bytes it
// consumed and whether the connection stays open.
func (s *Server) process(c *conn, buf []byte) (int, bool) {
	off := 0
	for off < len(buf) {
		var n int
		var keep bool
		st := c.state
		switch st {
		case stateSniff:
			n, keep = s.sniff(c, buf[off:])
		case stateTCP:
			n, keep = s.readTCP(c, buf[off:])
		case stateHTTP:
			n, keep = s.readHTTP(c, buf[off:])
		case stateWS, stateWSEcho:
			n, keep = s.readWS(c, buf[off:])
		}
		off += n
		if !keep {
			return off, false
		}
		if n == 0 && st == c.state {
			break // need more bytes, or waiting for an API reply
		}
		if c.isClosed() {
			break // closing after a reply: whatever follows is ignored
		}
	}
	return off, true
}

func (s *Server) setProto(c *conn, st connState, p codec.Proto) {
	s.metrics.connections.WithLabelValues(protoLabel(c)).Dec()
	c.state = st
	c.proto.Store(uint32(p))
	s.metrics.connections.WithLabelValues(p.String()).Inc()
}

func (s *Server) sniff(c *conn, b []byte) (int, bool) {
	p, needMore := codec.Sniff(b)
	if needMore {
		return 0, true
	}
	switch p {
	case codec.ProtoTCP:
		if s.draining.Load() {
			// Lame duck: chat clients go elsewhere; HTTP still gets in,
			// so load balancers can read /healthz say "draining".
			c.setReason(reasonLameDuck)
			return 0, false
		}
		s.setProto(c, stateTCP, codec.ProtoTCP)
	case codec.ProtoHTTP:
		s.setProto(c, stateHTTP, codec.ProtoHTTP)
	case codec.ProtoTLS:
		switch {
		case c.tls != nil:
			// A ClientHello inside TLS: nothing speaks that.
			c.setReason(reasonGarbage)
			s.metrics.decodeErrors.WithLabelValues("tls").Inc()
			return 0, false
		case s.tls == nil:
			c.setReason(reasonTLSDisabled)
			return 0, false
		}
		// The state stays stateSniff: the plaintext inside is sniffed
		// again, and until then the login deadline covers the handshake.
		s.startTLS(c)
		return 0, true
	default:
		c.setReason(reasonGarbage)
		s.metrics.decodeErrors.WithLabelValues("unknown").Inc()
		return 0, false
	}
	// The state changed but no bytes were consumed: process goes on in the
	// new state.
	return 0, true
}

func (s *Server) readTCP(c *conn, b []byte) (int, bool) {
	off := 0
	for {
		limit, preAuth := s.bodyLimit(c, s.opts.MaxTCPBody)
		f, n, err := codec.DecodeTCPDropBody(b[off:], limit, codec.CmdHeartbeatReq)
		if err != nil {
			s.metrics.decodeErrors.WithLabelValues("tcp").Inc()
			if errors.Is(err, codec.ErrBodyTooLarge) {
				reason := reasonTooLarge
				if preAuth {
					reason = reasonPreAuthSize
				}
				// Answered, unlike J-IM (which has no limit): the client
				// learns why before the connection closes. The body is not
				// read, so the connection cannot go on.
				rc := replyCmd(f.Cmd)
				c.sendLast(codec.AppendTCP(nil, rc, f.Seq, f.HasSeq, codec.StatusResp(rc, codec.StatusTooLarge)), reason)
				return off, true
			}
			c.setReason(reasonDecode)
			return off, false
		}
		if n == 0 {
			return off, true
		}
		off += n
		if ok, kick := s.allowMsg(c); !ok {
			if kick {
				c.setReason(reasonMsgRate)
				return off, false
			}
			rc := replyCmd(f.Cmd)
			c.sendRaw(codec.AppendTCP(nil, rc, f.Seq, f.HasSeq, codec.StatusResp(rc, codec.StatusRateLimited)))
			continue
		}
		s.h.Handle(c, dispatch.Packet{Cmd: f.Cmd, Seq: f.Seq, HasSeq: f.HasSeq, Body: f.Body})
		if c.isClosed() {
			return off, true
		}
	}
}

// readWS decodes WebSocket frames. On the echo endpoint (stateWSEcho) data
// messages go straight back instead of to the handler.
func (s *Server) readWS(c *conn, b []byte) (int, bool) {
	off := 0
	echo := c.state == stateWSEcho
	for {
		if echo {
			c.ws.MaxMessage = s.opts.MaxWSMessage
		} else {
			c.ws.MaxMessage, _ = s.bodyLimit(c, s.opts.MaxWSMessage)
		}
		msg, ok, n, err := c.ws.Decode(b[off:])
		if err != nil {
			s.metrics.decodeErrors.WithLabelValues("ws").Inc()
			code := uint16(1002)
			var we *codec.WSError
			if errors.As(err, &we) {
				code = we.Code
			}
			reason := reasonWSProtocol
			if code == 1009 {
				reason = reasonTooLarge
			}
			c.sendLast(codec.AppendWSClose(nil, code, wsReason(err)), reason)
			return off, true
		}
		if n == 0 {
			return off, true
		}
		off += n
		if ok {
			switch msg.Op {
			case codec.WSText, codec.WSBinary:
				if echo {
					c.sendRaw(codec.AppendWSFrame(nil, msg.Op, msg.Payload))
					break
				}
				if ok, kick := s.allowMsg(c); !ok {
					if kick {
						c.setReason(reasonMsgRate)
						return off, false
					}
					cmd, _ := codec.PeekCmd(msg.Payload)
					rc := replyCmd(cmd)
					c.sendRaw(codec.AppendWSFrame(nil, codec.WSText, codec.StatusResp(rc, codec.StatusRateLimited)))
					continue
				}
				s.h.HandleWS(c, msg.Payload)
			case codec.WSPing:
				c.sendRaw(codec.AppendWSFrame(nil, codec.WSPong, msg.Payload))
			case codec.WSClose:
				// Echo the peer's code (RFC 6455 §5.5.1); an empty close
				// (1005, which never goes on the wire) gets an empty one.
				c.sendLast(codec.AppendWSClose(nil, msg.CloseCode, ""), reasonWSClose)
				return off, true
			}
		}
		if c.isClosed() {
			return off, true
		}
	}
}

// bodyLimit is the largest frame body c may send now: small until it has
// logged in.
func (s *Server) bodyLimit(c *conn, loggedIn int) (limit int, preAuth bool) {
	if c.UserID() == "" && s.opts.MaxPreAuthBody < loggedIn {
		return s.opts.MaxPreAuthBody, true
	}
	return loggedIn, false
}

// wsReason is the close reason text: the decoder's, without our prefix.
func wsReason(err error) string {
	var we *codec.WSError
	if errors.As(err, &we) {
		return we.Reason
	}
	return "protocol error"
}

func (c *conn) setReason(r string) {
	c.mu.Lock()
	if c.reason == 0 {
		c.reason = internReason(r)
	}
	c.mu.Unlock()
}

// firstDeadline is the wheel second at which a new connection is first
// looked at: its login deadline, or its idle deadline when logins are not
// timed.
func (s *Server) firstDeadline(c *conn) int64 {
	d := int64(0)
	for _, t := range [...]int64{s.auSeconds, s.hbSeconds} {
		if t > 0 && (d == 0 || int64(c.opened)+t < d) {
			d = int64(c.opened) + t
		}
	}
	return d
}

// clock advances the timing wheel once a second and expires connections.
func (s *Server) clock() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for range t.C {
		if s.stopped.Load() {
			return
		}
		s.expire()
		s.refreshOut()
	}
}

// expire handles the connections due in this wheel second.
func (s *Server) expire() {
	now, due := s.wheel.tick()
	for _, c := range due {
		if c.isClosed() {
			if c.lingering() {
				if d := int64(c.lastActive.Load()) + lingerSeconds; now < d {
					s.wheel.add(c, d)
				} else {
					_ = c.gc.Close()
				}
			}
			continue
		}
		// TCP and WS connections must log in first; HTTP ones must send
		// a whole request, then answer to the idle timeout only.
		if s.auSeconds > 0 && c.needsLogin() && now >= int64(c.opened)+s.auSeconds {
			c.closeNow(reasonAuthTimeout)
			continue
		}
		var deadline int64
		if s.hbSeconds > 0 {
			deadline = int64(c.lastActive.Load()) + s.hbSeconds
			if now >= deadline {
				c.closeNow(reasonIdle)
				continue
			}
		}
		if s.auSeconds > 0 && c.needsLogin() {
			if d := int64(c.opened) + s.auSeconds; deadline == 0 || d < deadline {
				deadline = d
			}
		}
		if deadline > 0 {
			s.wheel.add(c, deadline)
		}
	}
}

// needsLogin reports whether c is still under the login deadline: TCP and
// WebSocket clients that have not logged in, and HTTP clients that have not
// finished their first request (headers that never end would otherwise hold
// the connection until the idle timeout). The echo endpoint never logs in.
// It runs on the clock's goroutine, so it reads nothing loop-owned.
func (c *conn) needsLogin() bool {
	c.mu.Lock()
	free := c.loginFree
	c.mu.Unlock()
	return !free && c.UserID() == ""
}

// setLoginFree sets whether c is exempt from the login deadline and returns
// what it was.
func (c *conn) setLoginFree(v bool) (was bool) {
	c.mu.Lock()
	was, c.loginFree = c.loginFree, v
	c.mu.Unlock()
	return was
}

// snapshot lists the open connections, for shutdown and lame duck.
func (s *Server) snapshot() []*conn {
	s.loopsMu.Lock()
	loops := make([]*loopState, 0, len(s.loops))
	for _, l := range s.loops {
		loops = append(loops, l)
	}
	s.loopsMu.Unlock()
	var out []*conn
	for _, l := range loops {
		l.connsMu.Lock()
		out = append(out, l.conns...)
		l.connsMu.Unlock()
	}
	return out
}

func (s *Server) loopFor(el gnet.EventLoop) *loopState {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	l, ok := s.loops[el]
	if !ok {
		l = &loopState{el: el, srv: s}
		s.loops[el] = l
	}
	return l
}

// isLoopback reports whether the peer is on this machine.
func isLoopback(a net.Addr) bool {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	return false
}

// gnetLogger routes gnet's own logs to slog.
type gnetLogger struct {
	l interface{ Debug(string, ...any) }
}

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...)) }
