package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"jim/codec"
)

// Errors returned by Client methods.
var (
	// ErrClosed is returned by requests on a client after Close.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected is returned when the connection is lost and
	// reconnecting is off.
	ErrDisconnected = errors.New("client: disconnected")
	// ErrNotLoggedIn is returned by requests that need the logged-in user id
	// before any login succeeded.
	ErrNotLoggedIn = errors.New("client: not logged in")
)

// Error is a refusal from the server: the reply's status code and text.
type Error struct {
	Cmd  codec.Cmd    // the reply command that carried the refusal
	Code codec.Status // J-IM or jim status code, e.g. 10102 forbidden
	Msg  string       // the server's message text
}

// Error formats the refusal with its code, so logs show what the server said.
func (e *Error) Error() string {
	return fmt.Sprintf("client: server refused (cmd %d): %d %s", e.Cmd, e.Code, e.Msg)
}

// MessageKind tells what a Message carries.
type MessageKind int

// Message kinds. Notices are delivered only with WithGroupNotices.
const (
	KindChat  MessageKind = iota // a chat (cmd 11); Chat is set
	KindJoin                     // a member joined a group (cmd 9); Group and User are set
	KindLeave                    // a member left or went offline (cmd 10); Group and User are set
)

// Message is one item delivered to the consumer.
type Message struct {
	Kind MessageKind
	// Chat is the message as stored by the server, with its server id and
	// its seq within the conversation.
	Chat codec.ChatBody
	// Group and User describe a group notice.
	Group string
	User  *codec.User
	// Resumed is true for a chat fetched after a reconnect because the
	// client missed it while disconnected.
	Resumed bool
}

// Client is a connection to a jim server that survives reconnects. All
// methods are safe for concurrent use.
type Client struct {
	opts options
	ep   endpoint
	log  *slog.Logger

	mu       sync.Mutex
	cur      *conn         // nil while disconnected
	ready    chan struct{} // closed when cur becomes usable
	dead     bool          // connection lost for good (no reconnect)
	me       string        // logged-in user id
	creds    *codec.LoginReq
	groups   map[string]struct{} // joined groups, rejoined after reconnect
	closedCh chan struct{}
	once     sync.Once
	wg       sync.WaitGroup

	// deliverMu orders every push into msgs, so resumed messages go out
	// before live ones that arrived while the resume ran.
	deliverMu  sync.Mutex
	msgs       chan Message
	msgsClosed bool
	resuming   bool
	pending    []Message

	track tracker
}

// Dial connects to addr: "tcp://host:port", "ws://host:port/path" (or
// wss://), or a bare "host:port" meaning TCP. With WithUser it also logs in,
// and a refused login is returned as an *Error. The first connection is not
// retried; reconnecting applies once Dial has succeeded.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	ep, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	c := &Client{
		opts:     o,
		ep:       ep,
		log:      o.logger,
		ready:    make(chan struct{}),
		groups:   map[string]struct{}{},
		closedCh: make(chan struct{}),
		msgs:     make(chan Message, o.buffer),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.track.convs = map[string]*convState{}
	if o.login {
		c.creds = &codec.LoginReq{UserID: o.user, Password: o.password, Token: o.token}
	}
	cn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if c.creds != nil {
		if _, err := c.loginOn(ctx, cn, *c.creds); err != nil {
			cn.shutdown()
			<-cn.done
			return nil, err
		}
	}
	c.publish(cn)
	if o.handler != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for m := range c.msgs {
				o.handler(m)
			}
		}()
	}
	c.wg.Add(1)
	go c.supervise(cn)
	return c, nil
}

// Messages returns the channel incoming messages are delivered on, in
// arrival order (resumed messages in seq order per conversation). It is
// closed by Close, or when the connection is lost and reconnecting is off.
// With WithHandler the handler consumes it and it must not be read.
func (c *Client) Messages() <-chan Message { return c.msgs }

// UserID returns the id of the logged-in user, or "" before a login.
func (c *Client) UserID() string { return c.userID() }

func (c *Client) userID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.me
}

// Close sends a close request (cmd 14) best effort, closes the connection,
// stops reconnecting and closes Messages. It waits for the client's
// goroutines, including a running handler, so it must not be called from
// the handler.
func (c *Client) Close() error {
	c.once.Do(func() {
		close(c.closedCh)
		c.mu.Lock()
		cn := c.cur
		c.mu.Unlock()
		if cn != nil {
			_ = cn.send(codec.CmdCloseReq, []byte(`{"cmd":14}`))
			cn.shutdown()
		}
		c.closeMessages()
	})
	c.wg.Wait()
	return nil
}

func (c *Client) closeMessages() {
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	if !c.msgsClosed {
		c.msgsClosed = true
		close(c.msgs)
	}
}

// connect dials and starts the connection's reader and heartbeat.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
	defer cancel()
	t, err := c.ep.dial(dctx)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.ep, err)
	}
	cn := newConn(c, t)
	c.wg.Add(2)
	go func() { defer c.wg.Done(); cn.readLoop() }()
	go func() { defer c.wg.Done(); cn.heartbeat(c.opts.heartbeat) }()
	return cn, nil
}

// publish makes cn the connection requests go to.
func (c *Client) publish(cn *conn) {
	c.mu.Lock()
	c.cur = cn
	close(c.ready)
	c.mu.Unlock()
}

// supervise waits for the current connection to end and replaces it.
func (c *Client) supervise(cn *conn) {
	defer c.wg.Done()
	for {
		select {
		case <-cn.done:
		case <-c.closedCh:
			return
		}
		c.mu.Lock()
		c.cur = nil
		c.ready = make(chan struct{})
		if !c.opts.reconnect {
			c.dead = true
			close(c.ready) // wake waiters so they see dead
		}
		c.mu.Unlock()
		if !c.opts.reconnect {
			c.log.Info("client: disconnected")
			c.closeMessages()
			return
		}
		next := c.reconnect()
		if next == nil {
			return // closed
		}
		cn = next
	}
}

// reconnect dials until a connection is up and logged in, then resumes.
// It returns nil if the client was closed meanwhile.
func (c *Client) reconnect() *conn {
	for attempt := 0; ; attempt++ {
		select {
		case <-time.After(c.backoff(attempt)):
		case <-c.closedCh:
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.closedCh:
				cancel()
			case <-ctx.Done():
			}
		}()
		cn, err := c.setup(ctx)
		cancel()
		if err != nil {
			c.log.Info("client: reconnect failed", "attempt", attempt+1, "err", err)
			continue
		}
		c.log.Info("client: reconnected", "addr", c.ep.String())
		return cn
	}
}

// setup brings a new connection to the state the old one was in: logged
// in, in the same groups, and with the missed messages delivered.
func (c *Client) setup(ctx context.Context) (*conn, error) {
	cn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	creds := c.creds
	c.mu.Unlock()
	resume := creds != nil && c.opts.resumeOnLost
	if resume {
		// Live messages from here on wait until the missed ones are out.
		c.deliverMu.Lock()
		c.resuming = true
		c.deliverMu.Unlock()
	}
	if creds != nil {
		lctx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
		_, err := c.loginOn(lctx, cn, *creds)
		cancel()
		if err != nil {
			cn.shutdown()
			c.finishResume(nil)
			return nil, err
		}
	}
	c.publish(cn)
	if creds == nil {
		return cn, nil
	}
	c.mu.Lock()
	groups := make([]string, 0, len(c.groups))
	for g := range c.groups {
		groups = append(groups, g)
	}
	c.mu.Unlock()
	for _, g := range groups {
		// Membership is durable in jim, so this normally just confirms it;
		// it matters for a server that lost its store.
		jctx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
		err := c.joinOn(jctx, cn, g)
		cancel()
		if err != nil {
			c.log.Warn("client: rejoining group", "group", g, "err", err)
		}
	}
	if resume {
		c.resume(ctx, cn)
	}
	return cn, nil
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.backoffMin
	for i := 0; i < attempt && d < c.opts.backoffMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.backoffMax)
	return d/2 + rand.N(d/2+1)
}

// waitConn returns the current connection, waiting for a reconnect.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ready, dead := c.cur, c.ready, c.dead
		c.mu.Unlock()
		select {
		case <-c.closedCh:
			return nil, ErrClosed
		default:
		}
		if dead {
			return nil, ErrDisconnected
		}
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ready:
		case <-c.closedCh:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// roundTrip sends a request and waits for its reply, repeating it on the
// next connection if the current one is lost first. Every request this
// package repeats is idempotent on jim (chats through their client id).
func (c *Client) roundTrip(ctx context.Context, cmd, replyCmd codec.Cmd, joinGroup string, body []byte) (*reply, error) {
	for {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return nil, err
		}
		r, err := c.roundTripOn(ctx, cn, cmd, replyCmd, joinGroup, body)
		if errors.Is(err, errConnLost) {
			continue // waitConn reports ErrDisconnected when reconnecting is off
		}
		return r, err
	}
}

// roundTripOn is one attempt on one connection.
func (c *Client) roundTripOn(ctx context.Context, cn *conn, cmd, replyCmd codec.Cmd, joinGroup string, body []byte) (*reply, error) {
	w, err := cn.request(cmd, replyCmd, joinGroup, body)
	if err != nil {
		return nil, err
	}
	select {
	case res := <-w:
		return res.r, res.err
	case <-ctx.Done():
		// The waiter stays queued so later replies still match their
		// requests; its reply is dropped into the buffered channel.
		return nil, ctx.Err()
	case <-c.closedCh:
		return nil, ErrClosed
	}
}

// deliverLive hands a message from the connection reader to the consumer,
// unless it was delivered before or a resume is running.
func (c *Client) deliverLive(m Message) {
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	if c.resuming {
		c.pending = append(c.pending, m)
		return
	}
	c.pushLocked(m)
}

// pushLocked delivers m if it is new. deliverMu must be held.
func (c *Client) pushLocked(m Message) {
	if c.msgsClosed {
		return
	}
	if m.Kind == KindChat && !c.track.markNew(c.userID(), &m.Chat) {
		return
	}
	select {
	case c.msgs <- m:
	case <-c.closedCh:
	}
}
