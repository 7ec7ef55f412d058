package client

import (
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"jim/codec"
)

// errConnLost fails the requests outstanding on a connection that closed.
// Requests catch it and, when reconnecting is on, try again on the next
// connection.
var errConnLost = errors.New("client: connection lost")

// reply is the union of the reply shapes jim sends.
type reply struct {
	Code    codec.Status    `json:"code"`
	Command codec.Cmd       `json:"command"`
	Msg     string          `json:"msg"`
	Data    json.RawMessage `json:"data"`
	User    *codec.User     `json:"user"`
	Group   string          `json:"group"`
	Result  int             `json:"result"`
}

type result struct {
	r   *reply
	err error
}

// waiter is one request waiting for its reply. The channel has room for the
// one result, so a reader never blocks on a caller that gave up.
type waiter chan result

// conn is one transport plus the requests waiting on it. Its waiters die
// with it: J-IM replies cannot be matched across connections.
type conn struct {
	c *Client
	t transport

	// wmu makes "queue the waiter, then write" atomic, so queue order is
	// wire order, which is what FIFO matching relies on.
	wmu sync.Mutex

	mu      sync.Mutex
	closed  bool
	waiters map[codec.Cmd][]waiter
	joins   map[string][]waiter

	done     chan struct{}
	lastRead atomic.Int64 // unix nanos of the last inbound message
}

func newConn(c *Client, t transport) *conn {
	cn := &conn{c: c, t: t, waiters: map[codec.Cmd][]waiter{}, joins: map[string][]waiter{}, done: make(chan struct{})}
	cn.lastRead.Store(time.Now().UnixNano())
	return cn
}

// send writes a request whose reply (if any) is not awaited.
func (cn *conn) send(cmd codec.Cmd, body []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if err := cn.t.write(cmd, body); err != nil {
		cn.shutdown()
		return errConnLost
	}
	return nil
}

// request writes a request and returns the channel its reply will arrive on:
// the next replyCmd, or for a join (joinGroup != "") the caller's own cmd-9
// notice or a cmd-8 refusal for that group.
func (cn *conn) request(cmd, replyCmd codec.Cmd, joinGroup string, body []byte) (waiter, error) {
	w := make(waiter, 1)
	cn.wmu.Lock()
	cn.mu.Lock()
	if cn.closed {
		cn.mu.Unlock()
		cn.wmu.Unlock()
		return nil, errConnLost
	}
	if joinGroup != "" {
		cn.joins[joinGroup] = append(cn.joins[joinGroup], w)
	} else {
		cn.waiters[replyCmd] = append(cn.waiters[replyCmd], w)
	}
	cn.mu.Unlock()
	err := cn.t.write(cmd, body)
	cn.wmu.Unlock()
	if err != nil {
		// The frame may be half written; the stream is unusable.
		cn.shutdown()
	}
	return w, nil
}

// resolve hands r to the oldest waiter for cmd.
func (cn *conn) resolve(cmd codec.Cmd, r *reply) bool {
	cn.mu.Lock()
	q := cn.waiters[cmd]
	if len(q) == 0 {
		cn.mu.Unlock()
		return false
	}
	w := q[0]
	q[0] = nil
	cn.waiters[cmd] = q[1:]
	cn.mu.Unlock()
	w <- result{r: r}
	return true
}

func (cn *conn) resolveJoin(gid string, res result) {
	cn.mu.Lock()
	q := cn.joins[gid]
	if len(q) == 0 {
		cn.mu.Unlock()
		return
	}
	w := q[0]
	if len(q) == 1 {
		delete(cn.joins, gid)
	} else {
		cn.joins[gid] = q[1:]
	}
	cn.mu.Unlock()
	w <- res
}

// shutdown closes the transport; the reader then fails the waiters.
func (cn *conn) shutdown() { _ = cn.t.close() }

// readLoop runs until the transport fails, then fails every waiter and
// closes done.
func (cn *conn) readLoop() {
	defer func() {
		cn.shutdown()
		cn.mu.Lock()
		cn.closed = true
		ws, js := cn.waiters, cn.joins
		cn.waiters, cn.joins = nil, nil
		cn.mu.Unlock()
		for _, q := range ws {
			for _, w := range q {
				w <- result{err: errConnLost}
			}
		}
		for _, q := range js {
			for _, w := range q {
				w <- result{err: errConnLost}
			}
		}
		close(cn.done)
	}()
	for {
		cmd, body, err := cn.t.read()
		if err != nil {
			cn.c.log.Debug("client: connection closed", "err", err)
			return
		}
		cn.lastRead.Store(time.Now().UnixNano())
		cn.handle(cmd, body)
	}
}

func (cn *conn) handle(cmd codec.Cmd, body []byte) {
	r := new(reply)
	if err := codec.Unmarshal(body, r); err != nil {
		cn.c.log.Warn("client: undecodable server message", "cmd", cmd, "err", err)
		return
	}
	if cmd == noCmd {
		cmd = r.Command
	}
	switch cmd {
	case codec.CmdChatReq:
		var cb codec.ChatBody
		if err := codec.Unmarshal(r.Data, &cb); err != nil {
			cn.c.log.Warn("client: undecodable chat", "err", err)
			return
		}
		cn.c.deliverLive(Message{Kind: KindChat, Chat: cb})
	case codec.CmdJoinGroupNotify:
		if r.User != nil && r.User.UserID == cn.c.userID() {
			cn.resolveJoin(r.Group, result{r: r})
		}
		if cn.c.opts.notices {
			cn.c.deliverLive(Message{Kind: KindJoin, Group: r.Group, User: r.User})
		}
	case codec.CmdJoinGroupResp:
		cn.resolveJoin(r.Group, result{r: r})
	case codec.CmdExitGroupNotify:
		if cn.c.opts.notices {
			var d codec.ExitNotifyData
			if codec.Unmarshal(r.Data, &d) == nil {
				cn.c.deliverLive(Message{Kind: KindLeave, Group: d.Group, User: d.User})
			}
		}
	case codec.CmdHeartbeatReq, codec.CmdCloseReq:
		// Heartbeat replies only prove liveness (lastRead); a close ack is
		// followed by the server closing the connection.
	default:
		if !cn.resolve(cmd, r) {
			cn.c.log.Debug("client: unmatched reply", "cmd", cmd, "code", int(r.Code), "msg", r.Msg)
		}
	}
}

// heartbeat sends cmd 13 every interval and drops a connection that has
// been silent for three intervals: a half-open TCP connection would
// otherwise go unnoticed until the next write fails.
func (cn *conn) heartbeat(interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	body := []byte(`{"cmd":13,"hbbyte":-127}`)
	for {
		select {
		case <-cn.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, cn.lastRead.Load())) > 3*interval {
			cn.c.log.Warn("client: server silent, reconnecting", "silent_for", 3*interval)
			cn.shutdown()
			return
		}
		if cn.send(codec.CmdHeartbeatReq, body) != nil {
			return
		}
	}
}
