// Package cluster_test runs three jim nodes in one process around an
// embedded NATS server with JetStream, sharing one store, and checks what a
// cluster must do: cross-node chat, group fan-out once per node, presence,
// kicks and a node that dies.
package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"jim/client"
	"jim/cluster"
	"jim/codec"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
	"jim/internal/jimtest/natstest"
	"jim/storage"
)

const testTTL = 2 * time.Second

type node struct {
	*jimtest.Server
	cn   *cluster.Node
	reg  *prometheus.Registry
	once sync.Once
}

func startNode(t testing.TB, url, id string, store storage.Store) *node {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	cn, err := cluster.Connect(cluster.Options{URLs: url, NodeID: id, PresenceTTL: testTTL, Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s := jimtest.StartServer(t, gateway.Options{Logger: log,
		Static: fstest.MapFS{"index.html": {Data: []byte("<!doctype html>")}}},
		dispatch.Options{Store: store, Cluster: cn, Logger: log})
	n := &node{Server: s, cn: cn, reg: reg}
	t.Cleanup(func() { n.stop(false) })
	return n
}

// stop stops the node; dead simulates a crash: the NATS connection goes
// first, so the node leaves its presence behind.
func (n *node) stop(dead bool) {
	n.once.Do(func() {
		if dead {
			n.cn.Conn().Close()
		}
		n.Server.Stop()
		_ = n.cn.Close()
	})
}

// startCluster starts NATS and three nodes over one shared store.
func startCluster(t testing.TB) []*node {
	t.Helper()
	url := natstest.Start(t, natstest.Options{JetStream: true})
	store := storage.NewMemory()
	t.Cleanup(func() { _ = store.Close() })
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = startNode(t, url, fmt.Sprintf("n%d", i), store)
	}
	return nodes
}

func dial(t testing.TB, n *node, uid string, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.Addr, append([]client.Option{client.WithUser(uid, "", ""), client.WithoutReconnect()}, opts...)...)
	if err != nil {
		t.Fatalf("dial %s: %v", uid, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seen waits until every node other than on sees uid online.
func seen(t testing.TB, nodes []*node, on *node, uid string) {
	t.Helper()
	for _, n := range nodes {
		if n == on {
			continue
		}
		eventually(t, 5*time.Second, uid+" visible on "+n.cn.ID(), func() bool { _, ok := n.cn.Remote(uid); return ok })
	}
}

func recvChat(t testing.TB, c *client.Client) codec.ChatBody {
	t.Helper()
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("%s: connection closed", c.UserID())
			}
			if m.Kind == client.KindChat {
				return m.Chat
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no message", c.UserID())
		}
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPrivateChatAcrossNodes(t *testing.T) {
	nodes := startCluster(t)
	a := dial(t, nodes[0], "alice")
	b := dial(t, nodes[1], "bob")
	seen(t, nodes, nodes[0], "alice")
	seen(t, nodes, nodes[1], "bob")

	ack, err := a.Send(ctx(t), "bob", "hi bob")
	if err != nil || ack.Code != codec.StatusOK {
		t.Fatalf("send: %+v %v", ack, err)
	}
	if m := recvChat(t, b); m.Content != "hi bob" || m.From != "alice" || m.ID != ack.ID {
		t.Fatalf("bob got %+v", m)
	}
	ack, err = b.Send(ctx(t), "alice", "hi alice")
	if err != nil || ack.Code != codec.StatusOK {
		t.Fatalf("send back: %+v %v", ack, err)
	}
	if m := recvChat(t, a); m.Content != "hi alice" || m.From != "bob" {
		t.Fatalf("alice got %+v", m)
	}
	// Order across nodes: a burst arrives in seq order.
	for i := range 50 {
		if _, err := a.Send(ctx(t), "bob", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		if m := recvChat(t, b); m.Content != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Content)
		}
	}
}

func counter(t testing.TB, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "kind", kind) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func TestGroupChatAcrossNodes(t *testing.T) {
	nodes := startCluster(t)
	var members []*client.Client
	for i, n := range nodes {
		for j := range 2 {
			uid := fmt.Sprintf("m%d%d", i, j)
			c := dial(t, n, uid)
			if err := c.Join(ctx(t), "g"); err != nil {
				t.Fatal(err)
			}
			members = append(members, c)
			seen(t, nodes, n, uid)
		}
	}
	// A member online elsewhere but not of the group must not get it.
	outsider := dial(t, nodes[2], "outsider")

	before := counter(t, nodes[0].reg, "jim_cluster_published_total", "group")
	ack, err := members[0].SendGroup(ctx(t), "g", "hello all")
	if err != nil || ack.Code != codec.StatusOK {
		t.Fatalf("send group: %+v %v", ack, err)
	}
	for _, c := range members {
		if m := recvChat(t, c); m.Content != "hello all" || m.ID != ack.ID {
			t.Fatalf("%s got %+v", c.UserID(), m)
		}
	}
	if got := counter(t, nodes[0].reg, "jim_cluster_published_total", "group") - before; got != 1 {
		t.Fatalf("group message published %v times, want once", got)
	}
	for _, n := range nodes[1:] {
		eventually(t, 2*time.Second, "received once", func() bool {
			return counter(t, n.reg, "jim_cluster_received_total", "group") >= 1
		})
	}
	// Exactly once: a second message is the next thing every member gets.
	if _, err := members[5].SendGroup(ctx(t), "g", "second"); err != nil {
		t.Fatal(err)
	}
	for _, c := range members {
		if m := recvChat(t, c); m.Content != "second" {
			t.Fatalf("%s got %q after the first, want \"second\"", c.UserID(), m.Content)
		}
	}
	select {
	case m := <-outsider.Messages():
		if m.Kind == client.KindChat {
			t.Fatalf("outsider got %+v", m.Chat)
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func api(t testing.TB, n *node, path string) codec.Status {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Code codec.Status `json:"code"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %s", path, b)
	}
	return r.Code
}

func TestPresenceAcrossNodes(t *testing.T) {
	nodes := startCluster(t)
	asker := dial(t, nodes[0], "asker")
	carol := dial(t, nodes[1], "carol")
	seen(t, nodes, nodes[1], "carol")

	u, err := asker.GetUser(ctx(t), "carol", codec.UserTypeAll)
	if err != nil || u.Status != "online" {
		t.Fatalf("get-user carol from another node: %+v %v", u, err)
	}
	if got := api(t, nodes[2], "/api/user/online?userid=carol"); got != codec.StatusOnline {
		t.Fatalf("api online on n2: %d", got)
	}
	_ = carol.Close()
	eventually(t, 5*time.Second, "carol offline everywhere", func() bool {
		u, err := asker.GetUser(ctx(t), "carol", codec.UserTypeAll)
		return err == nil && u.Status == "offline" && api(t, nodes[2], "/api/user/online?userid=carol") == codec.StatusOffline
	})
	// Offline now: a private chat says so and goes to the offline queue.
	ack, err := asker.Send(ctx(t), "carol", "later")
	if err != nil || !ack.Offline {
		t.Fatalf("send to offline carol: %+v %v", ack, err)
	}
	carol2 := dial(t, nodes[2], "carol")
	msgs, err := carol2.Offline(ctx(t), client.OfflineQuery{})
	if err != nil || len(msgs) != 1 || msgs[0].Content != "later" {
		t.Fatalf("offline: %+v %v", msgs, err)
	}
}

// closed waits for c's connection to end (reconnect is off).
func closed(t testing.TB, c *client.Client) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-c.Messages():
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("%s: connection not closed", c.UserID())
		}
	}
}

// rawTCP is a J-IM TCP connection without the SDK, for the close command.
type rawTCP struct{ c net.Conn }

func (r *rawTCP) send(t testing.TB, cmd codec.Cmd, body string) {
	t.Helper()
	if _, err := r.c.Write(codec.AppendTCP(nil, cmd, 0, false, []byte(body))); err != nil {
		t.Fatal(err)
	}
}

func TestKickAcrossNodes(t *testing.T) {
	nodes := startCluster(t)
	// The HTTP API on one node closes the user's connections on the others.
	d1 := dial(t, nodes[1], "dave")
	d2 := dial(t, nodes[2], "dave")
	// A kick goes to the nodes presence says hold the user, so wait until
	// every node has heard of both connections.
	seen(t, nodes, nodes[1], "dave")
	seen(t, nodes, nodes[2], "dave")
	if got := api(t, nodes[0], "/api/user/close?userid=dave"); got != codec.StatusCloseOK {
		t.Fatalf("api close: %d", got)
	}
	closed(t, d1)
	closed(t, d2)

	// Cmd 14 with the user's own id closes its connections on other nodes.
	e1 := dial(t, nodes[1], "erin")
	seen(t, nodes, nodes[1], "erin")
	c, err := net.DialTimeout("tcp", nodes[0].Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &rawTCP{c}
	r.send(t, codec.CmdLoginReq, `{"userId":"erin"}`)
	eventually(t, 5*time.Second, "erin on n0", func() bool { return nodes[0].D.Online("erin") })
	r.send(t, codec.CmdCloseReq, `{"userId":"erin"}`)
	closed(t, e1)
}

func TestNodeDeath(t *testing.T) {
	nodes := startCluster(t)
	a := dial(t, nodes[0], "amy")
	v := dial(t, nodes[2], "vic")
	if err := a.Join(ctx(t), "team"); err != nil {
		t.Fatal(err)
	}
	if err := v.Join(ctx(t), "team"); err != nil {
		t.Fatal(err)
	}
	seen(t, nodes, nodes[2], "vic")
	if _, err := a.Send(ctx(t), "vic", "before"); err != nil {
		t.Fatal(err)
	}
	recvChat(t, v)

	died := time.Now()
	nodes[2].stop(true)
	// Sent while the survivors may still think vic is on the dead node:
	// acknowledged all the same, and not lost.
	var acked []client.Ack
	for i := range 3 {
		ack, err := a.Send(ctx(t), "vic", fmt.Sprint("during ", i))
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, ack)
	}
	gack, err := a.SendGroup(ctx(t), "team", "group during")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[:2] {
		eventually(t, testTTL+time.Second, "dead node's presence gone on "+n.cn.ID(), func() bool {
			_, ok := n.cn.Remote("vic")
			return !ok
		})
	}
	if el := time.Since(died); el > testTTL+500*time.Millisecond {
		t.Fatalf("presence dropped after %v, want within %v", el, testTTL)
	}
	if got := api(t, nodes[1], "/api/user/online?userid=vic"); got != codec.StatusOffline {
		t.Fatalf("vic still online: %d", got)
	}

	// vic comes back on another node and finds every acknowledged message:
	// the private ones in its offline queue, the group one in history.
	v2 := dial(t, nodes[1], "vic")
	msgs, err := v2.Offline(ctx(t), client.OfflineQuery{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, m := range msgs {
		got[m.ID] = true
	}
	hist, err := v2.History(ctx(t), client.HistoryQuery{Group: "team"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range hist {
		got[m.ID] = true
	}
	for _, ack := range append(acked, gack) {
		if !got[ack.ID] {
			t.Fatalf("acknowledged message %s missing after reconnect (offline %d, history %d)", ack.ID, len(msgs), len(hist))
		}
	}
	// And the cluster routes to its new node.
	seen(t, nodes[:2], nodes[1], "vic")
	if _, err := a.Send(ctx(t), "vic", "after"); err != nil {
		t.Fatal(err)
	}
	if m := recvChat(t, v2); m.Content != "after" {
		t.Fatalf("got %q", m.Content)
	}
}
