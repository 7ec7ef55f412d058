package gateway

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"jim/codec"
)

// Disconnect reasons for limits.
const (
	reasonMaxConns    = "max_conns"
	reasonMaxConnsIP  = "max_conns_per_ip"
	reasonMsgRate     = "msg_rate"
	reasonByteRate    = "byte_rate"
	reasonLameDuck    = "lame_duck"
	reasonPreAuthSize = "pre_auth_too_large"
)

// bucket is a token bucket on the event loop's clock. It has no lock: only
// the connection's loop touches it.
type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

// refill adds what the rate earned since the last call, up to burst.
func (b *bucket) refill(now int64, rate, burst float64) {
	if b.last == 0 {
		b.tokens, b.last = burst, now
		return
	}
	b.tokens += float64(now-b.last) / 1e9 * rate
	if b.tokens > burst {
		b.tokens = burst
	}
	b.last = now
}

// connLimits is allocated only when rate limits are configured, so
// connections of a server without them pay one nil pointer.
type connLimits struct {
	msgs    bucket
	bytes   bucket
	strikes int // messages refused in a row
}

// allowMsg takes one message token. It reports whether the message may go
// on, and whether the connection has been refused so often in a row that it
// must go.
func (s *Server) allowMsg(c *conn) (ok, kick bool) {
	if s.opts.MsgRate <= 0 {
		return true, false
	}
	l := c.limits()
	l.msgs.refill(time.Now().UnixNano(), s.opts.MsgRate, float64(s.opts.MsgBurst))
	if l.msgs.tokens >= 1 {
		l.msgs.tokens--
		l.strikes = 0
		return true, false
	}
	l.strikes++
	s.metrics.rateLimited.WithLabelValues("msg").Inc()
	return false, l.strikes > s.opts.MsgBurst
}

// allowBytes charges n inbound bytes; false means the peer is more than a
// burst over its byte rate and must be disconnected.
func (s *Server) allowBytes(c *conn, n int) bool {
	if s.opts.ByteRate <= 0 {
		return true
	}
	l := c.limits()
	l.bytes.refill(time.Now().UnixNano(), s.opts.ByteRate, float64(s.opts.ByteBurst))
	l.bytes.tokens -= float64(n)
	if l.bytes.tokens < -float64(s.opts.ByteBurst) {
		s.metrics.rateLimited.WithLabelValues("bytes").Inc()
		return false
	}
	return true
}

func (c *conn) limits() *connLimits {
	if c.lim == nil {
		c.lim = &connLimits{}
	}
	return c.lim
}

// replyCmd is the command a refusal of a request goes out under: J-IM
// answers request N with N+1, except heartbeat and close, which answer under
// their own code; anything else gets the unknown-command code 0.
func replyCmd(cmd codec.Cmd) codec.Cmd {
	switch {
	case cmd == codec.CmdHeartbeatReq || cmd == codec.CmdCloseReq || cmd == codec.CmdExitGroupReq:
		return cmd
	case cmd > 0 && cmd < codec.CmdGetMessageResp && cmd%2 == 1:
		return cmd + 1
	}
	return codec.CmdUnknown
}

// ipCounter counts open connections per source address for MaxConnsPerIP.
type ipCounter struct {
	mu sync.Mutex
	m  map[netip.Addr]int32
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// inc counts one more connection from ip unless that would pass max.
func (p *ipCounter) inc(ip netip.Addr, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[netip.Addr]int32)
	}
	if int(p.m[ip]) >= max {
		return false
	}
	p.m[ip]++
	return true
}

func (p *ipCounter) dec(ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.m[ip]; n <= 1 {
		delete(p.m, ip)
	} else {
		p.m[ip] = n - 1
	}
}
