package client_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"jim/client"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
	"jim/storage"
)

var quiet = slog.New(slog.DiscardHandler)

// startServer runs jim on addr (a free port when empty) over store (a fresh
// memory store when nil). The caller stops it.
func startServer(addr string, store storage.Store, hbTimeout time.Duration) (*jimtest.Server, error) {
	gopts := gateway.Options{Addr: addr, Logger: quiet, HeartbeatTimeout: hbTimeout, NumEventLoop: 2}
	if hbTimeout > 0 {
		// The server first looks at a connection at its login deadline
		// (10 s by default), so a short idle timeout needs a short one too.
		gopts.AuthTimeout = hbTimeout
	}
	return jimtest.Start(gopts, dispatch.Options{Store: store, Logger: quiet})
}

func newServer(t *testing.T) *jimtest.Server {
	t.Helper()
	s, err := startServer("", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
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
