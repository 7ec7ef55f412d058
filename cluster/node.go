// Package cluster makes jim gateways one cluster over NATS. It owns presence
// (which node holds which user's connections) and routing (carrying an
// encoded message to the nodes whose users need it); a Node implements
// dispatch.Cluster, so the dispatcher stays the same with or without it.
//
// Presence is plain NATS, nothing stored on the server. Each node announces
// its own users on its own subject:
//
//	jim.presence.<node>        deltas: users that logged in or left, many per
//	                           message; heartbeats every PresenceTTL/4; a
//	                           hello when it starts and a goodbye when it closes
//	jim.presence.sync.<node>   snapshot requests: the node answers with all
//	                           its users, in chunks, on the asker's inbox
//
// Every node keeps a compact view of every other node's users: a snapshot
// of each node, then its deltas. Each message carries the node's epoch
// (random per process) and delta sequence number, so a receiver notices a
// delta it missed (a gap, or a heartbeat ahead of what it applied) and a
// restarted node (a new epoch), and asks for a fresh snapshot. A node
// counts as dead after 3/4 PresenceTTL without a message: its users look
// offline at once, and drop out of every view after 4 more TTLs unless it
// speaks again first (a starved node then comes back without a snapshot);
// a node that closes says goodbye and drops out at once. Lookups
// (get-user, routing) read the local view and never wait on the network. A login costs one record in one message
// per linger interval, whatever the number of users; the view costs a few
// dozen bytes per user on every node.
//
// Routing uses core NATS subjects, published without waiting:
//
//	jim.node.<node>       chats and kicks for users held by that node
//	jim.group.<origin>    group messages, to every node once; each node fans
//	                      them out to its own online members
//
// Every message is one frame: the dispatch.ClusterMsg kind, command, target
// and excepted user, then the JSON as encoded once by the sending node.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"jim/dispatch"
)

// Errors returned by Connect.
var (
	// ErrNodeID is returned for a NodeID with characters NATS subjects and
	// KV keys cannot carry.
	ErrNodeID = errors.New("cluster: node id must be letters, digits, '-' and '_'")
	// ErrNoURLs is returned when Options.URLs is empty.
	ErrNoURLs = errors.New("cluster: no NATS URLs")
)

// Subject prefixes of routed messages.
const (
	nodeSubject  = "jim.node."
	groupSubject = "jim.group."
)

// Options configure a Node.
type Options struct {
	// URLs are the NATS servers, comma separated: "nats://h:4222[,nats://h2:4222]".
	URLs string
	// NodeID names this node in presence and subjects; empty means the
	// host name plus a random suffix, so a restarted node is a new node and
	// never inherits its previous life's presence.
	NodeID string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer, when non-nil, gets the jim_cluster_* metrics.
	Registerer prometheus.Registerer
	// PresenceTTL bounds how long a dead node's users still look online.
	// Zero means 15 s: short enough that messages soon go to offline queues,
	// long enough that a NATS server failover does not empty presence.
	PresenceTTL time.Duration
	// Replicas is accepted for compatibility and unused: presence is no
	// longer stored in JetStream.
	Replicas int
}

// Node is one jim gateway's membership of the cluster. It implements
// dispatch.Cluster; its methods are safe for concurrent use.
type Node struct {
	id     string
	epoch  uint64
	nc     *nats.Conn
	log    *slog.Logger
	ttl    time.Duration
	m      *metrics
	view   *view
	h      atomic.Pointer[handlerBox]
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	subsMu sync.Mutex
	subs   []*nats.Subscription

	dirtyMu sync.Mutex
	dirty   map[string]struct{}
	wake    chan struct{}

	// What this node announced: its users and the last delta's number.
	annMu     sync.Mutex
	announced map[string]annEntry
	annSeq    uint64

	// The other nodes' announcements, applied by one goroutine.
	presCh chan *nats.Msg
	peerMu sync.Mutex
	peers  map[string]*peer
	reqSeq uint64
	// selfHeard is when this node's own presence message last came back
	// (presence goroutine only).
	selfHeard time.Time

	missMu  sync.Mutex
	miss    map[uint64]missed // user chats published and not yet known to have arrived
	missSeq uint64

	started   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

type handlerBox struct{ h dispatch.ClusterHandler }

var _ dispatch.Cluster = (*Node)(nil)

// Connect connects to NATS and loads the cluster's current presence: it
// says hello, and loads a snapshot from every node that answers. The node
// starts routing and announcing its users when the Dispatcher given it
// calls Start.
func Connect(o Options) (*Node, error) {
	if strings.TrimSpace(o.URLs) == "" {
		return nil, ErrNoURLs
	}
	id := o.NodeID
	if id == "" {
		id = generateID()
	} else if !validID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNodeID, id)
	}
	ttl := o.PresenceTTL
	if ttl <= 0 {
		ttl = 15 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", id)
	var e [8]byte
	_, _ = rand.Read(e[:])
	n := &Node{id: id, epoch: binary.LittleEndian.Uint64(e[:]), log: log, ttl: ttl, dirty: map[string]struct{}{},
		miss: map[uint64]missed{}, wake: make(chan struct{}, 1), announced: map[string]annEntry{},
		peers: map[string]*peer{}, presCh: make(chan *nats.Msg, 1<<16)}
	n.m = newMetrics()
	n.view = newView(id, ttl*3/4)
	n.m.entries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jim_cluster_presence_entries", Help: "Presence entries (user on node) in this node's view of the cluster.",
	}, func() float64 { return float64(n.view.entryCount()) })
	n.m.nodes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jim_cluster_nodes", Help: "Live nodes in this node's view of the cluster, itself included.",
	}, func() float64 { return float64(n.view.liveNodes()) })
	if o.Registerer != nil {
		if err := n.m.register(o.Registerer); err != nil {
			log.Warn("cluster: metrics registration", "err", err)
		}
	}

	nc, err := nats.Connect(o.URLs,
		nats.Name("jim "+id),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("cluster: disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			log.Info("cluster: reconnected to NATS")
			n.republish()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.m.slow.Inc()
			}
			log.Warn("cluster: NATS error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to NATS: %w", err)
	}
	n.nc = nc
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.setupPresence(); err != nil {
		n.cancel()
		nc.Close()
		return nil, err
	}
	return n, nil
}

// Conn returns the node's NATS connection, which other parts of jim (the
// JetStream store) share.
func (n *Node) Conn() *nats.Conn { return n.nc }

// ID returns the node id, as used in presence and subjects.
func (n *Node) ID() string { return n.id }

// Start subscribes to the messages for this node, begins the heartbeat and
// publishes the presence of h's users. dispatch.New calls it.
func (n *Node) Start(h dispatch.ClusterHandler) {
	if !n.started.CompareAndSwap(false, true) {
		return
	}
	n.h.Store(&handlerBox{h})
	// The heartbeat goes out before any delta, so the other nodes ask for
	// a snapshot first.
	n.heartbeat()
	for _, subj := range []string{nodeSubject + n.id, groupSubject + "*", n.missInbox() + "*"} {
		sub, err := n.nc.Subscribe(subj, n.receive)
		if err != nil {
			n.log.Error("cluster: subscribing", "subject", subj, "err", err)
			continue
		}
		// Delivery only appends to the dispatcher's queues, so the
		// subscription drains fast; the limits are for bursts.
		_ = sub.SetPendingLimits(1<<20, 512<<20)
		n.subsMu.Lock()
		n.subs = append(n.subs, sub)
		n.subsMu.Unlock()
	}
	for _, uid := range h.LocalUsers() {
		n.UserChanged(uid)
	}
	n.wg.Add(1)
	go n.presenceLoop()
}

// Close stops routing, tells the other nodes to forget this node's users
// and drains the NATS connection. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.subsMu.Lock()
		for _, s := range n.subs {
			_ = s.Unsubscribe()
		}
		n.subs = nil
		n.subsMu.Unlock()
		n.cancel()
		n.wg.Wait()
		if !n.nc.IsClosed() {
			n.control(presBye)
			n.closeErr = n.drain()
		}
	})
	return n.closeErr
}

// drain flushes what was published and closes the connection, waiting at
// most 10 s.
func (n *Node) drain() error {
	done := make(chan struct{})
	n.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := n.nc.Drain(); err != nil {
		n.nc.Close()
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		return err
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.nc.Close()
	}
	return nil
}

// setupPresence subscribes to the other nodes' presence, says hello and
// waits, for a short while, until every node that answered is loaded.
func (n *Node) setupPresence() error {
	subs := []struct {
		subj string
		cb   nats.MsgHandler
	}{
		{presenceSubject + "*", nil},
		{syncInbox + n.id + ".*", nil},
		{syncSubject + n.id, n.serveSync},
	}
	for _, s := range subs {
		var sub *nats.Subscription
		var err error
		if s.cb == nil {
			sub, err = n.nc.ChanSubscribe(s.subj, n.presCh)
		} else {
			sub, err = n.nc.Subscribe(s.subj, s.cb)
		}
		if err != nil {
			return fmt.Errorf("cluster: subscribing to presence: %w", err)
		}
		n.subsMu.Lock()
		n.subs = append(n.subs, sub)
		n.subsMu.Unlock()
	}
	n.wg.Add(1)
	go n.presenceIn()
	if err := n.nc.Flush(); err != nil {
		return fmt.Errorf("cluster: presence: %w", err)
	}
	n.control(presHello)
	// Live nodes answer the hello within a round trip; a node that is
	// slower shows up with its next heartbeat instead.
	wait := min(n.ttl/8, 300*time.Millisecond)
	time.Sleep(wait)
	deadline := time.Now().Add(10 * time.Second)
	for !n.allSynced() {
		if time.Now().After(deadline) {
			n.log.Warn("cluster: presence not fully loaded yet; continuing")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (n *Node) handler() dispatch.ClusterHandler {
	if b := n.h.Load(); b != nil {
		return b.h
	}
	return nil
}

func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// generateID is the host name, reduced to valid characters, and 8 random
// hex digits.
func generateID() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for i := 0; i < len(host) && b.Len() < 48; i++ {
		c := host[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("jim")
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	b.WriteByte('-')
	b.WriteString(hex.EncodeToString(r[:]))
	return b.String()
}
