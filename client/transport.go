package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"jim/codec"
)

// writeTimeout bounds one frame write. It is not the caller's context: a
// cancelled request must not tear a half-written frame into the stream (or,
// for WebSocket, close the connection).
const writeTimeout = 10 * time.Second

// maxInbound bounds one frame from the server. A history page of 1000 large
// messages may well exceed the server's own 1 MiB request limit.
const maxInbound = 64 << 20

// noCmd tells the reader that the transport carries no command outside the
// JSON body (WebSocket), so the body's "command" field decides.
const noCmd codec.Cmd = -1

// transport is one established connection in either framing.
type transport interface {
	// write sends one request. Calls are serialised by the caller.
	write(cmd codec.Cmd, body []byte) error
	// read returns the next server message; cmd is noCmd when the framing
	// does not carry it.
	read() (cmd codec.Cmd, body []byte, err error)
	close() error
}

// endpoint is a parsed Dial address.
type endpoint struct {
	ws   bool
	host string // tcp: host:port
	url  string // ws: the full URL
}

func parseAddr(addr string) (endpoint, error) {
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		addr = strings.TrimPrefix(addr, "tcp://")
	case strings.HasPrefix(addr, "ws://"), strings.HasPrefix(addr, "wss://"):
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return endpoint{}, fmt.Errorf("client: bad WebSocket address %q", addr)
		}
		return endpoint{ws: true, url: addr}, nil
	case strings.Contains(addr, "://"):
		return endpoint{}, fmt.Errorf("client: unsupported address scheme in %q", addr)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return endpoint{}, fmt.Errorf("client: bad address %q: %w", addr, err)
	}
	return endpoint{host: addr}, nil
}

func (e endpoint) String() string {
	if e.ws {
		return e.url
	}
	return "tcp://" + e.host
}

func (e endpoint) dial(ctx context.Context) (transport, error) {
	if e.ws {
		c, _, err := websocket.Dial(ctx, e.url, nil)
		if err != nil {
			return nil, err
		}
		c.SetReadLimit(maxInbound)
		return &wsTransport{c: c}, nil
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", e.host)
	if err != nil {
		return nil, err
	}
	return &tcpTransport{c: c, buf: make([]byte, 0, readBuf)}, nil
}

// readBuf is a TCP connection's read buffer: it holds many ordinary frames.
// A larger frame (a history page) grows it; it shrinks back afterwards, so
// that one page of maxInbound is not held for the connection's life.
const readBuf = 64 << 10

// tcpTransport speaks J-IM TCP frames. Requests are sent without a sync seq:
// jim then replies without one, and matching is by command order anyway.
type tcpTransport struct {
	c   net.Conn
	buf []byte // unread bytes; touched by the reader only
	out []byte // reused frame buffer; guarded by the caller's write lock
}

func (t *tcpTransport) write(cmd codec.Cmd, body []byte) error {
	t.out = codec.AppendTCP(t.out[:0], cmd, 0, false, body)
	_ = t.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := t.c.Write(t.out)
	return err
}

func (t *tcpTransport) read() (codec.Cmd, []byte, error) {
	for {
		f, n, err := codec.DecodeTCP(t.buf, maxInbound)
		if err != nil {
			return 0, nil, err
		}
		if n > 0 {
			if rest := t.buf[n:]; cap(t.buf) > 4*readBuf && len(rest) <= readBuf {
				t.buf = append(make([]byte, 0, readBuf), rest...)
			} else {
				t.buf = t.buf[:copy(t.buf, rest)]
			}
			return f.Cmd, f.Body, nil
		}
		if len(t.buf) == cap(t.buf) {
			t.buf = append(t.buf, make([]byte, cap(t.buf))...)[:len(t.buf)]
		}
		m, err := t.c.Read(t.buf[len(t.buf):cap(t.buf)])
		t.buf = t.buf[:len(t.buf)+m]
		if err != nil && m == 0 {
			return 0, nil, err
		}
	}
}

func (t *tcpTransport) close() error { return t.c.Close() }

// wsTransport speaks WebSocket with one JSON body per text message.
type wsTransport struct {
	c    *websocket.Conn
	once sync.Once
}

func (t *wsTransport) write(_ codec.Cmd, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	return t.c.Write(ctx, websocket.MessageText, body)
}

func (t *wsTransport) read() (codec.Cmd, []byte, error) {
	_, b, err := t.c.Read(context.Background())
	if err != nil {
		return 0, nil, err
	}
	return noCmd, b, nil
}

func (t *wsTransport) close() error {
	var err error
	t.once.Do(func() {
		// A clean close handshake would wait on a server that may be gone.
		err = t.c.CloseNow()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
