package client_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"jim/client"
	"jim/dispatch"
	"jim/gateway"
	"jim/storage"
)

var quiet = slog.New(slog.DiscardHandler)

// server is an in-process jim: gateway plus dispatcher.
type server struct {
	addr string
	srv  *gateway.Server
	d    *dispatch.Dispatcher
	errc chan error
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startServer runs jim on addr (a free port when empty) over store (a fresh
// memory store when nil).
func startServer(addr string, store storage.Store, hbTimeout time.Duration) (*server, error) {
	if addr == "" {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	d := dispatch.New(dispatch.Options{Store: store, Logger: quiet})
	gopts := gateway.Options{Addr: addr, Logger: quiet, HeartbeatTimeout: hbTimeout, NumEventLoop: 2}
	if hbTimeout > 0 {
		// The server first looks at a connection at its login deadline
		// (10 s by default), so a short idle timeout needs a short one too.
		gopts.AuthTimeout = hbTimeout
	}
	srv := gateway.New(gopts, d)
	s := &server{addr: addr, srv: srv, d: d, errc: make(chan error, 1)}
	go func() { s.errc <- srv.Serve() }()
	select {
	case <-srv.Started():
		return s, nil
	case err := <-s.errc:
		d.Close()
		return nil, err
	case <-time.After(10 * time.Second):
		return nil, context.DeadlineExceeded
	}
}

func (s *server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.srv.Stop(ctx)
	<-s.errc
	s.d.Close()
}

func newServer(t *testing.T) *server {
	t.Helper()
	s, err := startServer("", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func dial(t *testing.T, addr, user string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts = append([]client.Option{client.WithUser(user, "pw", ""), client.WithLogger(quiet)}, opts...)
	c, err := client.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", addr, user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next returns the next chat delivered to c.
func next(t *testing.T, c *client.Client) client.Message {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatal("messages channel closed")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no message within 5s", c.UserID())
	}
	panic("unreachable")
}

// none asserts that nothing more is delivered to c for d.
func none(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.Messages():
		t.Fatalf("%s: unexpected message %+v", c.UserID(), m.Chat)
	case <-time.After(d):
	}
}
