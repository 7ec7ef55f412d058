package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"jim/client"
	"jim/codec"
	"jim/storage"
)

func TestChatTCPAndWS(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	for _, tc := range []struct{ name, a, b string }{
		{"tcp-ws", "tcp://" + s.Addr, "ws://" + s.Addr + "/"},
		{"ws-tcp", "ws://" + s.Addr + "/chat", s.Addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alice := dial(t, tc.a, "alice-"+tc.name)
			bob := dial(t, tc.b, "bob-"+tc.name)

			ack, err := alice.Send(ctx, bob.UserID(), "hi bob")
			if err != nil {
				t.Fatal(err)
			}
			if ack.Code != codec.StatusOK || ack.Offline || ack.Seq != 1 || len(ack.ID) != 32 || ack.ClientID == "" {
				t.Fatalf("ack %+v", ack)
			}
			m := next(t, bob)
			if m.Kind != client.KindChat || m.Chat.From != alice.UserID() || m.Chat.Content != "hi bob" ||
				m.Chat.ID != ack.ID || m.Chat.Seq != 1 || m.Resumed {
				t.Fatalf("bob got %+v", m)
			}

			ack, err = bob.Send(ctx, alice.UserID(), "hi alice", client.WithMsgType(1), client.WithExtras([]byte(`{"k":"v"}`)))
			if err != nil || ack.Seq != 2 {
				t.Fatalf("ack %+v, %v", ack, err)
			}
			m = next(t, alice)
			if m.Chat.From != bob.UserID() || m.Chat.Content != "hi alice" || m.Chat.MsgType != 1 ||
				string(m.Chat.Extras) != `{"k":"v"}` || m.Chat.Seq != 2 {
				t.Fatalf("alice got %+v", m.Chat)
			}
			// The sender gets no copy of its own private message.
			none(t, bob, 100*time.Millisecond)
		})
	}
}

func TestGroup(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	alice := dial(t, s.Addr, "alice", client.WithGroupNotices())
	bob := dial(t, "ws://"+s.Addr, "bob")
	carol := dial(t, s.Addr, "carol")

	if err := alice.Join(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, alice); m.Kind != client.KindJoin || m.Group != "g1" || m.User.UserID != "alice" {
		t.Fatalf("alice's own join notice: %+v", m)
	}
	if err := bob.Join(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, alice); m.Kind != client.KindJoin || m.User.UserID != "bob" {
		t.Fatalf("bob's join notice: %+v", m)
	}
	if got := bob.Groups(); len(got) != 1 || got[0] != "g1" {
		t.Fatalf("bob groups %v", got)
	}

	ack, err := bob.SendGroup(ctx, "g1", "hello group")
	if err != nil || ack.Code != codec.StatusOK || ack.Seq != 1 {
		t.Fatalf("ack %+v, %v", ack, err)
	}
	for _, c := range []*client.Client{alice, bob} { // the sender gets the echo
		m := next(t, c)
		if m.Chat.GroupID != "g1" || m.Chat.From != "bob" || m.Chat.Content != "hello group" || m.Chat.Seq != 1 {
			t.Fatalf("%s got %+v", c.UserID(), m.Chat)
		}
	}

	// A non-member is refused.
	_, err = carol.SendGroup(ctx, "g1", "let me in")
	var e *client.Error
	if !errors.As(err, &e) || e.Code != codec.StatusForbidden {
		t.Fatalf("non-member send: %v", err)
	}

	u, err := carol.GetUser(ctx, "bob", codec.UserTypeAll)
	if err != nil || u.UserID != "bob" || u.Status != "online" || len(u.Groups) != 1 || u.Groups[0].Online != 2 {
		t.Fatalf("get user: %+v, %v", u, err)
	}

	if err := bob.Leave(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if m := next(t, alice); m.Kind != client.KindLeave || m.Group != "g1" || m.User.UserID != "bob" {
		t.Fatalf("leave notice: %+v", m)
	}
	if err := bob.Leave(ctx, "g1"); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := bob.SendGroup(ctx, "g1", "still here?"); !errors.As(err, &e) || e.Code != codec.StatusForbidden {
		t.Fatalf("send after leave: %v", err)
	}
	if len(bob.Groups()) != 0 {
		t.Fatalf("bob groups after leave %v", bob.Groups())
	}
}

func TestHistory(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	alice := dial(t, s.Addr, "alice")
	bob := dial(t, s.Addr, "bob")
	for i := range 5 {
		from, to := alice, bob
		if i%2 == 1 {
			from, to = bob, alice
		}
		if _, err := from.Send(ctx, to.UserID(), fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
		next(t, to)
	}
	h, err := alice.History(ctx, client.HistoryQuery{Peer: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 5 {
		t.Fatalf("history has %d messages", len(h))
	}
	for i, m := range h {
		if m.Content != fmt.Sprint("m", i) || m.Seq != uint64(i+1) {
			t.Fatalf("history[%d] = %+v", i, m)
		}
	}
	h, err = bob.History(ctx, client.HistoryQuery{Peer: "alice", AfterSeq: 3})
	if err != nil || len(h) != 2 || h[0].Seq != 4 || h[1].Seq != 5 {
		t.Fatalf("afterSeq history: %+v, %v", h, err)
	}
	h, err = bob.History(ctx, client.HistoryQuery{Peer: "alice", Offset: 1, Count: 2})
	if err != nil || len(h) != 2 || h[0].Content != "m1" || h[1].Content != "m2" {
		t.Fatalf("paged history: %+v, %v", h, err)
	}
	if _, err := bob.History(ctx, client.HistoryQuery{Group: "nobody-joined"}); err == nil {
		t.Fatal("group history by a non-member succeeded")
	}
}

func TestOfflineOnLogin(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	alice := dial(t, s.Addr, "alice")
	for i := range 3 {
		ack, err := alice.Send(ctx, "carol", fmt.Sprint("while you were out ", i))
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Offline || ack.Code != codec.StatusOffline || ack.Seq != uint64(i+1) {
			t.Fatalf("ack %+v", ack)
		}
	}
	carol := dial(t, "ws://"+s.Addr, "carol")
	msgs, err := carol.Offline(ctx, client.OfflineQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("got %d offline messages", len(msgs))
	}
	for i, m := range msgs {
		if m.From != "alice" || m.Content != fmt.Sprint("while you were out ", i) || m.Seq != uint64(i+1) {
			t.Fatalf("offline[%d] = %+v", i, m)
		}
	}
	// Fetched once, gone from the queue.
	if msgs, err := carol.Offline(ctx, client.OfflineQuery{Peer: "alice"}); err != nil || len(msgs) != 0 {
		t.Fatalf("second fetch: %+v, %v", msgs, err)
	}
}

func TestHeartbeatKeepsIdleConnection(t *testing.T) {
	t.Parallel()
	s, err := startServer("", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	ctx := ctxT(t)
	alive := dial(t, s.Addr, "alive", client.WithHeartbeat(400*time.Millisecond), client.WithoutReconnect())
	silent := dial(t, s.Addr, "silent", client.WithHeartbeat(time.Hour), client.WithoutReconnect())

	time.Sleep(3500 * time.Millisecond) // past the server's 2 s idle timeout (plus its 1 s wheel)

	if _, err := alive.Send(ctx, "silent", "still here"); err != nil {
		t.Fatalf("heartbeating client was dropped: %v", err)
	}
	// The control: without heartbeats the server closed the connection.
	if _, err := silent.Send(ctx, "alive", "hello?"); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("silent client: err = %v, want ErrDisconnected", err)
	}
	if _, ok := <-silent.Messages(); ok {
		t.Fatal("messages of a disconnected client not closed")
	}
}

func TestReconnectResume(t *testing.T) {
	t.Parallel()
	store := storage.NewMemory()
	defer store.Close()
	s1, err := startServer("", store, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	// bob's backoff keeps him away long enough for alice to send.
	bob := dial(t, s1.Addr, "bob", client.WithReconnect(1500*time.Millisecond, 2*time.Second))
	alice := dial(t, s1.Addr, "alice", client.WithoutReconnect())
	for _, c := range []*client.Client{alice, bob} {
		if err := c.Join(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.Send(ctx, "bob", "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, "g", "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, "alice", "p2 from bob"); err != nil {
		t.Fatal(err)
	}
	want := func(c *client.Client, content string, seq uint64, resumed bool) {
		t.Helper()
		m := next(t, c)
		if m.Chat.Content != content || m.Chat.Seq != seq || m.Resumed != resumed {
			t.Fatalf("%s got %q seq %d resumed %v, want %q seq %d resumed %v",
				c.UserID(), m.Chat.Content, m.Chat.Seq, m.Resumed, content, seq, resumed)
		}
	}
	want(bob, "p1", 1, false)
	want(bob, "g1", 1, false)

	s1.Stop()
	s2, err := startServer(s1.Addr, store, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()

	sender := dial(t, s2.Addr, "alice", client.WithoutReconnect())
	for i := 3; i <= 5; i++ {
		ack, err := sender.Send(ctx, "bob", fmt.Sprint("p", i))
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Offline {
			t.Fatalf("bob came back too early (ack %+v); the test needs him away", ack)
		}
	}
	for i := 2; i <= 3; i++ {
		if _, err := sender.SendGroup(ctx, "g", fmt.Sprint("g", i)); err != nil {
			t.Fatal(err)
		}
	}
	// bob reconnects, logs in and resumes: exactly the missed messages, in
	// order per conversation (private first, as the offline queue lists
	// conversations by time of their first missed message).
	got := map[string][]string{}
	for range 5 {
		m := next(t, bob)
		if !m.Resumed {
			t.Fatalf("live message %+v before the resumed ones", m.Chat)
		}
		k := m.Chat.GroupID
		if k == "" {
			k = m.Chat.From
		}
		got[k] = append(got[k], fmt.Sprintf("%s/%d", m.Chat.Content, m.Chat.Seq))
	}
	if fmt.Sprint(got["alice"]) != "[p3/3 p4/4 p5/5]" || fmt.Sprint(got["g"]) != "[g2/2 g3/3]" {
		t.Fatalf("resumed %v", got)
	}
	// A live message after the resume comes once, not resumed.
	if _, err := sender.Send(ctx, "bob", "p6"); err != nil {
		t.Fatal(err)
	}
	want(bob, "p6", 6, false)
	none(t, bob, 200*time.Millisecond)

	// The queue was drained by the resume; nothing is left for Offline.
	if msgs, err := bob.Offline(ctx, client.OfflineQuery{}); err != nil || len(msgs) != 0 {
		t.Fatalf("offline after resume: %+v, %v", msgs, err)
	}
	if got := bob.Groups(); len(got) != 1 || got[0] != "g" {
		t.Fatalf("bob's groups after reconnect: %v", got)
	}
}

func TestSendRetriesAcrossReconnect(t *testing.T) {
	t.Parallel()
	store := storage.NewMemory()
	defer store.Close()
	s1, err := startServer("", store, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	bob := dial(t, s1.Addr, "bob", client.WithReconnect(100*time.Millisecond, 200*time.Millisecond))
	s1.Stop()
	// The Send waits for the reconnect and goes out on the new connection.
	done := make(chan error, 1)
	go func() {
		_, err := bob.Send(ctx, "alice", "queued while down", client.WithClientID("fixed-id"))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s2, err := startServer(s1.Addr, store, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A resend with the same client id is de-duplicated by the server.
	a1, err := bob.Send(ctx, "alice", "queued while down", client.WithClientID("fixed-id"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := bob.History(ctx, client.HistoryQuery{Peer: "alice"})
	if err != nil || len(h) != 1 || h[0].Seq != a1.Seq {
		t.Fatalf("history %+v (%v), want one message with seq %d", h, err, a1.Seq)
	}
}

func TestConcurrentSends(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	alice := dial(t, s.Addr, "alice")
	bob := dial(t, "ws://"+s.Addr, "bob")
	const workers, per = 10, 20
	var mu sync.Mutex
	seqs := map[uint64]string{}
	var wg sync.WaitGroup
	errc := make(chan error, workers*per)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				id := fmt.Sprintf("w%d-%d", w, i)
				ack, err := alice.Send(ctx, "bob", id, client.WithClientID(id))
				if err != nil {
					errc <- err
					return
				}
				// FIFO matching gave each caller its own ack.
				if ack.ClientID != id {
					errc <- fmt.Errorf("ack for %s carries client id %s", id, ack.ClientID)
				}
				mu.Lock()
				if prev, dup := seqs[ack.Seq]; dup {
					errc <- fmt.Errorf("seq %d acked to %s and %s", ack.Seq, prev, id)
				}
				seqs[ack.Seq] = id
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(seqs) != workers*per {
		t.Fatalf("%d distinct seqs", len(seqs))
	}
	for i := 1; i <= workers*per; i++ {
		m := next(t, bob)
		if m.Chat.Seq != uint64(i) || m.Chat.Content != seqs[m.Chat.Seq] {
			t.Fatalf("message %d: %+v", i, m.Chat)
		}
	}
	none(t, bob, 100*time.Millisecond)
}

func TestLoginRefusedAndBadAddress(t *testing.T) {
	s := newServer(t)
	ctx := ctxT(t)
	if _, err := client.Dial(ctx, "udp://"+s.Addr); err == nil {
		t.Fatal("udp address accepted")
	}
	_, err := client.Dial(ctx, s.Addr, client.WithUser("", "", ""), client.WithLogger(quiet))
	var e *client.Error
	if !errors.As(err, &e) || e.Code != codec.StatusLoginFailed {
		t.Fatalf("empty user login: %v", err)
	}
	c, err := client.Dial(ctx, s.Addr, client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.History(ctx, client.HistoryQuery{Peer: "x"}); !errors.Is(err, client.ErrNotLoggedIn) {
		t.Fatalf("history before login: %v", err)
	}
	u, err := c.Login(ctx, "dave", "", "")
	if err != nil || u.UserID != "dave" || c.UserID() != "dave" {
		t.Fatalf("login: %+v, %v", u, err)
	}
	c.Close()
	if _, err := c.Send(context.Background(), "x", "y"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}
