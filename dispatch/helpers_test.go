package dispatch

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"jim/codec"
	"jim/storage"
)

var nextConnID atomic.Uint64

// fakeConn records what dispatch sends it.
type fakeConn struct {
	id     uint64
	proto  string
	mu     sync.Mutex
	out    []*codec.Outbound
	closed bool
	reason string
	uid    string
	refuse bool // Send fails, as for a connection over its outbound cap
}

func newConn() *fakeConn { return &fakeConn{id: nextConnID.Add(1), proto: "ws"} }

func (c *fakeConn) ID() uint64         { return c.id }
func (c *fakeConn) Protocol() string   { return c.proto }
func (c *fakeConn) RemoteAddr() string { return fmt.Sprintf("127.0.0.1:%d", c.id) }
func (c *fakeConn) Send(m *codec.Outbound) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.refuse {
		return false
	}
	c.out = append(c.out, m)
	return true
}
func (c *fakeConn) Close(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed, c.reason = true, reason
	}
}
func (c *fakeConn) UserID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uid
}
func (c *fakeConn) SetUserID(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uid = id
}
func (c *fakeConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// take returns and forgets what was sent so far.
func (c *fakeConn) take() []*codec.Outbound {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.out
	c.out = nil
	return out
}

// reply is a decoded server message.
type reply struct {
	Command int             `json:"command"`
	Code    int             `json:"code"`
	Msg     string          `json:"msg"`
	Data    json.RawMessage `json:"data"`
	Group   string          `json:"group"`
	User    *codec.User     `json:"user"`
	o       *codec.Outbound
}

func decode(t *testing.T, o *codec.Outbound) reply {
	t.Helper()
	var r reply
	if err := json.Unmarshal(o.JSON, &r); err != nil {
		t.Fatalf("reply %q: %v", o.JSON, err)
	}
	if r.Command != int(o.Cmd) {
		t.Fatalf("outbound cmd %d but JSON command %d: %s", o.Cmd, r.Command, o.JSON)
	}
	r.o = o
	return r
}

func (c *fakeConn) replies(t *testing.T) []reply {
	t.Helper()
	var out []reply
	for _, o := range c.take() {
		out = append(out, decode(t, o))
	}
	return out
}

// one expects exactly one reply and returns it.
func (c *fakeConn) one(t *testing.T) reply {
	t.Helper()
	rs := c.replies(t)
	if len(rs) != 1 {
		var s []string
		for _, r := range rs {
			s = append(s, string(r.o.JSON))
		}
		t.Fatalf("conn %d: want 1 reply, got %d: %v", c.id, len(rs), s)
	}
	return rs[0]
}

func (r reply) data(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("data %s: %v", r.Data, err)
	}
}

func newDispatcher(t *testing.T, o Options) (*Dispatcher, storage.Store) {
	t.Helper()
	if o.Store == nil {
		o.Store = storage.NewMemory()
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	d := New(o)
	t.Cleanup(func() { d.Close(); o.Store.Close() })
	return d, o.Store
}

// do handles one packet and waits until the workers are idle and every chat
// the store accepted has been finished.
func do(d *Dispatcher, c Conn, cmd codec.Cmd, body string) {
	d.Handle(c, Packet{Cmd: cmd, Body: []byte(body)})
	settle(d)
}

// settle waits until the workers are idle and every chat the store accepted
// has been finished.
func settle(d *Dispatcher) {
	d.pool.barrier()
	d.inflight.Wait()
}

// login logs a fresh connection in as uid and discards its replies.
func login(t *testing.T, d *Dispatcher, uid string) *fakeConn {
	t.Helper()
	c := newConn()
	do(d, c, codec.CmdLoginReq, `{"cmd":5,"userId":"`+uid+`","password":"x"}`)
	rs := c.replies(t)
	if len(rs) == 0 || rs[len(rs)-1].Code != int(codec.StatusLoginOK) {
		t.Fatalf("login %s: %v", uid, rs)
	}
	return c
}
