// Package cluster makes jim gateways one cluster over NATS. It owns presence
// (which node holds which user's connections) and routing (carrying an
// encoded message to the nodes whose users need it); a Node implements
// dispatch.Cluster, so the dispatcher stays the same with or without it.
//
// Presence lives in a JetStream key-value bucket, jim_presence:
//
//	n.<node>              a node's heartbeat, written every PresenceTTL/4
//	u.<user>.<node>       the user (base64url) has connections on node; the
//	                      value is the user's public profile (JSON)
//
// A user key is written when the user logs in on a node and purged when its
// last connection there closes; there is no per-key TTL to refresh, so a
// node with a million users writes nothing for them while they stay. What
// bounds the life of a dead node's entries is its heartbeat: every node
// watches the whole bucket into a local view, counts a node dead after
// 3/4 PresenceTTL without a heartbeat and ignores its entries from then on,
// and the first of the live nodes by id purges them from the bucket. A KV
// bucket rather than plain announcements because a node that starts gets the
// current presence of the cluster from the bucket at once, without asking
// every other node; lookups (get-user, routing) read the local view and never
// wait on the network.
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
	"github.com/nats-io/nats.go/jetstream"
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

// Bucket is the JetStream key-value bucket that holds presence.
const Bucket = "jim_presence"

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
	// Replicas of the presence bucket, when this node creates it. Zero
	// means 1; use 3 on a three-server NATS cluster.
	Replicas int
}

// Node is one jim gateway's membership of the cluster. It implements
// dispatch.Cluster; its methods are safe for concurrent use.
type Node struct {
	id     string
	nc     *nats.Conn
	kv     jetstream.KeyValue
	log    *slog.Logger
	ttl    time.Duration
	m      *metrics
	view   *view
	h      atomic.Pointer[handlerBox]
	kvPre  string // "$KV.jim_presence."
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	subsMu sync.Mutex
	subs   []*nats.Subscription

	dirtyMu sync.Mutex
	dirty   map[string]struct{}
	wake    chan struct{}

	missMu  sync.Mutex
	miss    map[uint64]missed // user chats published and not yet known to have arrived
	missSeq uint64

	started   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

type handlerBox struct{ h dispatch.ClusterHandler }

var _ dispatch.Cluster = (*Node)(nil)

// Connect connects to NATS, creates the presence bucket if it is missing
// and loads the cluster's current presence. The node starts routing and
// announcing its users when the Dispatcher given it calls Start.
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
	n := &Node{id: id, log: log, ttl: ttl, dirty: map[string]struct{}{}, miss: map[uint64]missed{}, wake: make(chan struct{}, 1),
		kvPre: "$KV." + Bucket + "."}
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
	if err := n.setupPresence(o.Replicas); err != nil {
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
	// The heartbeat goes out before any user entry, so other nodes never
	// see users of a node they do not know yet.
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
	n.republish()
	n.wg.Add(1)
	go n.presenceLoop()
}

// Close stops routing, removes this node's presence from the bucket and
// drains the NATS connection. It is idempotent.
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
			users := n.view.usersOn(n.id)
			if h := n.handler(); h != nil {
				users = append(users, h.LocalUsers()...)
			}
			for _, uid := range users {
				n.removeKey(userKey(uid, n.id))
			}
			n.removeKey(nodeKey(n.id))
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
