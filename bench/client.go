package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"

	"jim/codec"
)

// Client states.
const (
	stUpgrade int32 = iota // WebSocket: waiting for the 101
	stLogin                // waiting for the login reply
	stReady                // logged in
)

var errClosed = errors.New("connection closed")

// client is one simulated user on one connection. It owns no goroutine: the
// netpoll event loop calls onRequest when bytes arrive.
type client struct {
	r    *runner
	idx  int
	user string
	ws   bool
	addr string

	conn    netpoll.Connection
	wmu     sync.Mutex // netpoll's Writer is not safe for concurrent use
	state   atomic.Int32
	settled atomic.Bool // counted as established or failed, exactly once
	pending atomic.Bool // holds a place among the runner's pending logins
	dead    atomic.Bool
	ours    atomic.Bool // closed by this side (protocol error, refused login)
	lost    atomic.Bool // counted as disconnected, at most once

	// gen numbers this user's connection attempts; concluded is the last
	// attempt whose outcome was claimed (see conclude). attempts counts
	// retries; only the code that concludes an attempt touches it.
	gen, concluded atomic.Uint32
	attempts       int

	pend []byte // a partial frame carried to the next read; onRequest only
	// readAt is when the bytes being parsed were read: one clock reading
	// per read, not per frame, serves every message in it.
	readAt int64
}

// handlerFor returns the read handler of c's connection attempt gen. Input
// that reaches an attempt superseded by a later one is dropped.
func (c *client) handlerFor(gen uint32) netpoll.OnRequest {
	return func(ctx context.Context, conn netpoll.Connection) error {
		if c.gen.Load() != gen {
			// netpoll calls the handler in a loop until the input is
			// read or the connection is closed by this side; returning
			// with bytes unread would spin its poller for ever, and
			// every connection on that poller would go deaf.
			discard(conn)
			return nil
		}
		return c.onRequest(ctx, conn)
	}
}

// onRequest consumes every readable byte, because netpoll calls it again in
// a loop for as long as unread input remains: a partial frame is copied to
// c.pend instead of being left in the connection's buffer.
func (c *client) onRequest(_ context.Context, conn netpoll.Connection) error {
	rd := conn.Reader()
	n := rd.Len()
	if n == 0 {
		return nil
	}
	b, err := rd.Next(n)
	if err != nil {
		// Unread input would keep netpoll calling this handler (see
		// discard); a reader that cannot be read is of no further use.
		discard(conn)
		c.closeFromHandler()
		return err
	}
	c.readAt = time.Now().UnixNano()
	data := b
	if len(c.pend) > 0 {
		c.pend = append(c.pend, b...)
		data = c.pend
	}
	used, perr := c.consume(data)
	rest := data[used:]
	switch {
	case perr != nil:
		c.pend = nil
	case len(rest) == 0:
		if cap(c.pend) > 64<<10 {
			c.pend = nil // do not pin a large buffer on an idle connection
		} else {
			c.pend = c.pend[:0]
		}
	case len(c.pend) > 0:
		// Nothing consumed: a large frame still arriving is all in pend
		// already, and moving it onto itself on every read would cost its
		// size each time.
		if used > 0 {
			c.pend = c.pend[:copy(c.pend, rest)]
		}
	default:
		c.pend = append(c.pend[:0], rest...)
	}
	_ = rd.Release()
	if perr != nil {
		if c.state.Load() != stReady && c.conclude(c.gen.Load()) {
			c.r.settleFailed(c, "protocol", perr.Error())
		} else {
			c.r.fail("protocol", perr)
		}
		c.closeFromHandler()
	}
	return nil
}

// closeFromHandler is close for code running in onRequest. Handlers run on
// netpoll's poller goroutine (see inlineHandlers), and netpoll's close spins
// until the poller has let go of the connection: closing there would spin
// for ever, so the close happens on a goroutine of its own.
func (c *client) closeFromHandler() {
	c.ours.Store(true)
	// The connection is taken now: by the time the goroutine runs, a
	// retry may have put another connection in c.conn.
	conn := c.conn
	go func() { _ = conn.Close() }()
}

// discard drops whatever conn has buffered, for a handler that wants none
// of it.
func discard(conn netpoll.Connection) {
	rd := conn.Reader()
	if n := rd.Len(); n > 0 {
		_ = rd.Skip(n)
	}
	_ = rd.Release()
}

// close closes the connection from this side; onClose then counts nothing
// more, because the cause has been counted already.
func (c *client) close() {
	c.ours.Store(true)
	_ = c.conn.Close()
}

// disconnected counts a logged-in connection lost during the run. A lost
// connection is never redialled: its user stays offline, and the run says so.
func (c *client) disconnected() {
	if c.r.closing.Load() || !c.lost.CompareAndSwap(false, true) {
		return
	}
	c.r.fail("disconnected", nil)
}

func (c *client) consume(data []byte) (int, error) {
	used := 0
	if c.state.Load() == stUpgrade {
		i := bytes.Index(data, []byte("\r\n\r\n"))
		if i < 0 {
			if len(data) > 16<<10 {
				return 0, errors.New("oversized WebSocket upgrade response")
			}
			return 0, nil
		}
		head := data[:i]
		line, _, _ := bytes.Cut(head, []byte("\r\n"))
		if !bytes.HasPrefix(line, []byte("HTTP/1.1 101")) {
			if !c.conclude(c.gen.Load()) {
				return len(data), nil
			}
			c.r.loginFailed(c, fmt.Sprintf("WebSocket upgrade refused for %s: %s", c.user, line))
			return len(data), nil
		}
		c.state.Store(stLogin)
		used = i + 4
	}
	for used < len(data) {
		var (
			cmd  int
			body []byte
			n    int
			err  error
		)
		if c.ws {
			var op byte
			op, body, n, err = scanWS(data[used:])
			if err != nil || n == 0 {
				return used, err
			}
			used += n
			switch op {
			case wsOpText, 0x2:
				v, ok := jsonInt(body, `"command":`)
				if !ok {
					continue
				}
				cmd = int(v)
			case wsOpPing:
				// Not written here: a sender holding wmu may be waiting
				// in Flush for this very poller to report the socket
				// writable, and waiting for wmu on the poller would
				// deadlock both. body lives in netpoll's buffer, which
				// is released when this handler returns.
				pong := AppendWSClientFrame(nil, wsOpPong, body, maskKey())
				go func() { _ = c.write(pong) }()
				continue
			case wsOpClose:
				// The server ends the session; the TCP close follows.
				if c.state.Load() == stReady {
					c.disconnected()
				}
				continue
			default:
				continue
			}
		} else {
			cmd, body, n, err = scanTCP(data[used:])
			if err != nil || n == 0 {
				return used, err
			}
			used += n
		}
		c.handle(cmd, body)
	}
	return used, nil
}

func (c *client) handle(cmd int, body []byte) {
	r := c.r
	switch cmd {
	case cmdChat:
		t, ok := sendTime(body)
		if !ok {
			return
		}
		if t >= r.measureStart.Load() {
			r.delivered.Add(1)
			r.hist.Record(c.readAt - t)
			r.tl.record(t, c.readAt-t)
		}
	case cmdChatResp:
		// The ack echoes the message's client id, its send time, so it
		// counts exactly when the message counted as sent. A reply without
		// it (an error status, or a server that does not echo the id)
		// counts by arrival time.
		if t, ok := jsonInt(body, `"clientId":`); ok {
			if t < r.measureStart.Load() {
				return
			}
		} else if !r.recording() {
			return
		}
		code, _ := jsonInt(body, `"code":`)
		switch code {
		case statusOK:
			r.acked.Add(1)
		case statusOffline:
			r.offline.Add(1)
		default:
			r.rejected.Add(1)
			r.fail("chat status "+strconv.FormatInt(code, 10), nil)
		}
	case cmdHeartbeat:
		r.heartbeats.Add(1)
	case cmdLoginResp:
		if c.state.Load() != stLogin {
			return
		}
		if !c.conclude(c.gen.Load()) {
			return // the login deadline came first
		}
		code, _ := jsonInt(body, `"code":`)
		if code != statusLoginOK {
			r.loginFailed(c, fmt.Sprintf("user %s got %s", c.user, truncate(body, 120)))
			return
		}
		c.state.Store(stReady)
		r.loggedIn(c)
	case cmdJoinResp:
		r.fail("join group refused", nil)
	}
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// onClose runs on netpoll's close path, for both sides' closes.
func (c *client) onClose(ctx context.Context, gen uint32) error {
	c.dead.Store(true)
	if c.r.closing.Load() || c.ours.Load() {
		return nil
	}
	if c.state.Load() != stReady {
		c.r.retryOrFail(ctx, c, gen, "closed before login", fmt.Sprintf("connection for user %s closed by the server before login completed", c.user))
		return nil
	}
	c.disconnected()
	return nil
}

// write sends one complete frame. The bytes are copied into netpoll's own
// buffer because WriteBinary may keep a reference to b, which callers reuse.
func (c *client) write(b []byte) error {
	if c.dead.Load() {
		return errClosed
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := c.conn.Writer()
	buf, err := w.Malloc(len(b))
	if err != nil {
		return err
	}
	copy(buf, b)
	// A server that stops reading blocks Flush. netpoll's own write
	// timeout cannot end that: on a descriptor adopted with
	// NewFDConnection its timeout path dereferences the remote address it
	// never learnt, and crashes. So the connection is closed from here
	// first, which makes Flush return with an error.
	g := c.guardWrite()
	err = w.Flush()
	g.stop()
	return err
}

// stallGuard watches one write while it is in Flush.
type stallGuard struct {
	c                    *client
	t                    *time.Timer
	done                 atomic.Bool
	rearms, stuck, lastN int // touched only by check, which never runs twice at once
}

func (c *client) guardWrite() *stallGuard {
	g := &stallGuard{c: c, lastN: -1}
	g.t = time.AfterFunc(writeStall, g.check)
	return g
}

// stop ends the watch once Flush has returned.
func (g *stallGuard) stop() {
	g.done.Store(true)
	g.t.Stop()
}

// check runs every writeStall period while the write is in Flush.
func (g *stallGuard) check() {
	// Stop cannot recall a check that is already running, and one that
	// re-armed the timer after Flush returned would go on firing against a
	// finished write until it gave up on it as stalled: at a million
	// connections that closed 77 healthy ones.
	if g.done.Load() {
		return
	}
	// Under heavy load the writing goroutine may simply not have run for
	// writeStall; then nothing waits in the kernel and the server is not to
	// blame. Bytes the server leaves unread make a stall only when they
	// stop draining: at a load average of 200 the kernel's own loopback
	// processing can hold a few bytes for seconds.
	n, ok := g.c.unsent()
	switch {
	case ok && n > 0 && (g.lastN < 0 || n < g.lastN):
		g.stuck, g.lastN = 0, n // draining
	case ok && n > 0:
		g.stuck++
	default:
		g.rearms++
	}
	if ok && n > 0 && g.stuck < stallPeriods || (!ok || n == 0) && g.rearms <= maxStallRearms {
		g.t.Reset(writeStall)
		return
	}
	kind := "write stalled"
	if !ok || n == 0 {
		kind = "write stalled, nothing queued"
	}
	c := g.c
	c.r.fail(kind, fmt.Errorf("server read nothing for %v", writeStall))
	c.close()
	if c.state.Load() == stReady {
		c.disconnected() // ours, but lost all the same
	}
}

// writeStall is the period of the write-stall guard: a write still in
// Flush after it is checked against the kernel. Unsent bytes that do not
// drain for stallPeriods periods make a stall; a write with nothing
// waiting in the kernel (its goroutine was late) is given up after
// maxStallRearms periods.
var writeStall = 5 * time.Second

const maxStallRearms = 12

// stallPeriods is how many writeStall periods unsent bytes may sit without
// draining before the server counts as not reading.
const stallPeriods = 6

// unsent returns the bytes c's socket has not yet sent or had acknowledged
// (SIOCOUTQ), and false if the kernel cannot tell.
func (c *client) unsent() (int, bool) {
	fc, ok := c.conn.(interface{ Fd() int })
	if !ok {
		return 0, false
	}
	n, err := unix.IoctlGetInt(fc.Fd(), unix.SIOCOUTQ)
	return n, err == nil
}

// send writes a JSON command in this client's framing. scratch is reused by
// the calling goroutine.
func (c *client) send(scratch *[]byte, cmd byte, body []byte) error {
	if c.ws {
		*scratch = AppendWSClientFrame((*scratch)[:0], wsOpText, body, maskKey())
	} else {
		*scratch = codec.AppendTCP((*scratch)[:0], codec.Cmd(cmd), 0, false, body)
	}
	return c.write(*scratch)
}

// maskKey returns a fresh masking key. RFC 6455 wants it unpredictable to
// defeat cache poisoning by hostile scripts; a fast PRNG is enough for a
// load generator talking to its own server.
func maskKey() [4]byte {
	v := mrand.Uint32()
	return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}

// start sends the first bytes: the login frame over TCP, or the upgrade
// request, whose username/password query logs in on jim and on J-IM's demo.
func (c *client) start(password string) error {
	if !c.ws {
		c.state.Store(stLogin)
		body := `{"cmd":5,"userId":"` + c.user + `","password":"` + password + `"}`
		var scratch []byte
		return c.send(&scratch, cmdLogin, []byte(body))
	}
	c.state.Store(stUpgrade)
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET /?username=" + c.user + "&password=" + password + " HTTP/1.1\r\n" +
		"Host: " + c.addr + "\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n\r\n"
	// One write: J-IM sniffs the protocol from the first read and drops a
	// connection whose request head arrives split.
	return c.write([]byte(req))
}
