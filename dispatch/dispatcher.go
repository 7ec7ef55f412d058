package dispatch

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"jim/codec"
	"jim/storage"
)

// Options configure a Dispatcher. The zero value is a working development
// setup: in-memory store, any user may log in, API only from loopback.
type Options struct {
	// Store is where messages and memberships go; nil means a new
	// storage.NewMemory, which the Dispatcher then owns and closes.
	Store storage.Store
	// Auth decides logins; nil means AnyUser.
	Auth Authenticator
	// Workers is the number of workers (default 2*GOMAXPROCS); QueueLen is
	// each worker's queue length (default 4096). A full queue is answered
	// with codec.StatusBusy.
	Workers  int
	QueueLen int
	// Registerer, when non-nil, gets the jim_* metrics.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// APIKey, when set, is required in X-API-Key by the HTTP API; when empty
	// the API answers loopback clients only.
	APIKey string
	// DefaultGroups are joined by every user at login (the J-IM demo page
	// expects group "100").
	DefaultGroups []string
	// GroupNames gives display names to groups in get-user replies (the J-IM
	// page shows group.name).
	GroupNames map[string]string
	// MaxGroupMembers refuses joins (cmd 8, result "full") beyond this many
	// members; 0 means unlimited.
	MaxGroupMembers int
	// MaxGroupsPerUser refuses a user's join (cmd 8) once the user is a
	// member of this many groups; 0 means unlimited. The refusal carries
	// result 3 (codec.JoinResultFull, as a full group) with data
	// {"limit":"groups_per_user"} telling the two apart. Default groups
	// joined at login are not limited.
	MaxGroupsPerUser int
	// NoticeMaxMembers limits join and leave notices (cmd 9 and 10) to
	// groups with at most this many online members; in bigger groups only
	// the joiner gets its own join notice. Zero means 500; negative means
	// always notify everyone, as J-IM does.
	NoticeMaxMembers int
	// MaxReplyBytes bounds the messages of one offline or history reply
	// (cmd 20), as their JSON, so that it stays under the gateway's
	// per-connection outbound limit; a reply always holds at least one
	// message, and what does not fit is fetched by asking again. Zero means
	// DefaultMaxReplyBytes; keep it at most half the outbound limit.
	MaxReplyBytes int
	// Cluster, when non-nil, makes this Dispatcher one node of a cluster:
	// presence, chats and kicks reach users on other nodes through it. Nil
	// means a single node.
	Cluster Cluster
}

// Dispatcher runs J-IM commands for the gateway's connections. All its
// methods are safe for concurrent use.
type Dispatcher struct {
	store      storage.Store
	ownStore   bool
	auth       Authenticator
	pool       *pool
	fin        *ordered       // finishes durable chats, in order per conversation
	inflight   sync.WaitGroup // chats handed to the store and not yet finished
	hub        *hub
	log        *slog.Logger
	m          *metrics
	apiKeySum  [sha256.Size]byte
	hasAPIKey  bool
	defGroups  []string
	groupNames map[string]string
	maxMembers int
	maxReply   int // Options.MaxReplyBytes, defaulted
	// scans holds a token per time-filtered history read in progress: such
	// a read scans the conversation (a few hundred milliseconds for a
	// million messages), so at most half the workers run them and the
	// others stay free for everyone else's commands.
	scans     chan struct{}
	maxGroups int
	noticeCap int
	cluster   Cluster
	mc        Multicaster // set before traffic starts; nil: Send on each
	ctx       context.Context
	now       func() time.Time
}

// New starts a Dispatcher and its workers.
func New(o Options) *Dispatcher {
	d := &Dispatcher{
		store:      o.Store,
		auth:       o.Auth,
		hub:        newHub(),
		log:        o.Logger,
		defGroups:  append([]string(nil), o.DefaultGroups...),
		groupNames: o.GroupNames,
		maxMembers: o.MaxGroupMembers,
		maxGroups:  o.MaxGroupsPerUser,
		noticeCap:  o.NoticeMaxMembers,
		maxReply:   o.MaxReplyBytes,
		cluster:    o.Cluster,
		ctx:        context.Background(),
		now:        time.Now,
	}
	if d.noticeCap == 0 {
		d.noticeCap = 500
	}
	if d.maxReply <= 0 {
		d.maxReply = DefaultMaxReplyBytes
	}
	if d.store == nil {
		d.store = storage.NewMemory()
		d.ownStore = true
	}
	if d.auth == nil {
		d.auth = AnyUser{}
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if o.APIKey != "" {
		d.apiKeySum = sha256.Sum256([]byte(o.APIKey))
		d.hasAPIKey = true
	}
	workers, qlen := o.Workers, o.QueueLen
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	if qlen <= 0 {
		qlen = 4096
	}
	d.pool = newPool(workers, qlen)
	d.scans = make(chan struct{}, max(1, workers/2))
	d.fin = newOrdered(workers)
	d.m = newMetrics(func() float64 { return float64(d.hub.sessionCount()) })
	if o.Registerer != nil {
		if err := d.m.register(o.Registerer); err != nil {
			d.log.Warn("dispatch: metrics registration", "err", err)
		}
	}
	if d.cluster != nil {
		d.cluster.Start(d)
	}
	return d
}

// Handle runs one packet of c. It is called on the gateway's event loop and
// never blocks: heartbeat, handshake and unknown commands are answered
// inline; everything else goes to c's worker, or is answered with
// codec.StatusBusy when that worker's queue is full.
func (d *Dispatcher) Handle(c Conn, p Packet) {
	d.m.inCounter(p.Cmd).Inc()
	switch p.Cmd {
	case codec.CmdHeartbeatReq:
		if !p.HasSeq {
			// The most frequent packet of an idle connection: one shared,
			// pre-framed reply instead of a fresh one per heartbeat.
			d.send(c, heartbeatOut)
			return
		}
		d.reply(c, &p, codec.CmdHeartbeatReq, codec.HeartbeatRespJSON)
		return
	case codec.CmdHandshakeReq:
		d.reply(c, &p, codec.CmdHandshakeResp, codec.HandshakeRespJSON)
		return
	}
	h := handlerFor(p.Cmd)
	if h == nil {
		d.reply(c, &p, codec.CmdUnknown, unknownCmdJSON)
		return
	}
	d.submit(h, c, p)
}

// submit hands p to c's worker. The copy the closure captures is made here,
// not in Handle, so that only packets bound for a worker reach the heap: a
// heartbeat allocates nothing.
func (d *Dispatcher) submit(h *handler, c Conn, p Packet) {
	if p.Cmd == codec.CmdChatReq {
		// Only chat replies are timed (jim_chat_ack_seconds); this runs
		// on the event loop, so other packets skip the clock read.
		p.arrived = time.Now()
	}
	if !d.pool.trySubmit(c.ID(), func() { d.run(h, c, &p) }) {
		d.m.queueFull.Inc()
		d.reply(c, &p, respCmd(p.Cmd), codec.StatusResp(respCmd(p.Cmd), codec.StatusBusy))
	}
}

// heartbeatOut is the heartbeat reply for requests without a sync seq.
var heartbeatOut = codec.NewOutbound(codec.CmdHeartbeatReq, codec.HeartbeatRespJSON)

// unknownCmdJSON is J-IM's exact unknown-command reply.
var unknownCmdJSON = codec.StatusResp(codec.CmdUnknown, codec.StatusUnknownCmd)

// run executes a handler on a worker, enforcing the login gate there (not on
// the event loop) so that a login pipelined before the packet counts.
func (d *Dispatcher) run(h *handler, c Conn, p *Packet) {
	if !h.public && c.UserID() == "" {
		rc := respCmd(p.Cmd)
		d.reply(c, p, rc, codec.StatusResp(rc, codec.StatusNotLoggedIn))
		return
	}
	h.fn(d, c, p)
}

// HandleWS runs one WebSocket text or binary message: the command comes from
// the JSON's "cmd", as in J-IM. It takes ownership of payload.
func (d *Dispatcher) HandleWS(c Conn, payload []byte) {
	cmd, ok := codec.PeekCmd(payload)
	if !ok {
		d.m.inCounter(codec.CmdUnknown).Inc()
		d.reply(c, nil, codec.CmdUnknown, unknownCmdJSON)
		return
	}
	d.Handle(c, Packet{Cmd: cmd, Body: payload})
}

// LoginFromQuery logs c in from the WebSocket upgrade's query parameters, as
// the J-IM demo page expects (username, password, token). It behaves like cmd
// 5 and replies with cmd 6.
func (d *Dispatcher) LoginFromQuery(c Conn, userID, password, token string) {
	d.m.inCounter(codec.CmdLoginReq).Inc()
	req := codec.LoginReq{UserID: userID, Password: password, Token: token}
	p := &Packet{Cmd: codec.CmdLoginReq}
	if !d.pool.trySubmit(c.ID(), func() { d.login(c, p, req) }) {
		d.m.queueFull.Inc()
		d.reply(c, p, codec.CmdLoginResp, codec.StatusResp(codec.CmdLoginResp, codec.StatusBusy))
	}
}

// Closed tells the dispatcher that c is gone. It runs on c's worker after
// everything c sent before (so a queued login cannot rebind a dead
// connection) and is never dropped, even when the queue is full. The user's
// group memberships stay; members are told the user left (cmd 10) only when
// this was the user's last connection.
func (d *Dispatcher) Closed(c Conn) {
	d.pool.mustSubmit(c.ID(), func() { d.closed(c) })
}

func (d *Dispatcher) closed(c Conn) {
	uid := c.UserID()
	if uid == "" {
		return
	}
	prof, _ := d.hub.profile(uid)
	found, last, groups := d.hub.unbind(uid, c)
	if !found || !last {
		return
	}
	d.userChanged(uid)
	for _, gid := range groups {
		d.exitNotice(gid, uid, prof)
	}
}

// Close stops the workers after they finish the queued work, and closes the
// store if the Dispatcher created it.
func (d *Dispatcher) Close() {
	d.pool.stop()
	// Chats already handed to the store are acknowledged work: wait for the
	// store to report them and for their delivery.
	d.inflight.Wait()
	d.fin.stop()
	if d.ownStore {
		_ = d.store.Close()
	}
}

// Online reports whether userID has a live connection on this node.
func (d *Dispatcher) Online(userID string) bool { return d.hub.online(userID) }

// Sessions is the number of logged-in connections.
func (d *Dispatcher) Sessions() int { return d.hub.sessionCount() }

// reply sends json under cmd to c, echoing the request's sequence number.
func (d *Dispatcher) reply(c Conn, req *Packet, cmd codec.Cmd, json []byte) bool {
	o := codec.NewOutbound(cmd, json)
	if req != nil && req.HasSeq {
		o.Seq, o.HasSeq = req.Seq, true
	}
	return d.send(c, o)
}

func (d *Dispatcher) send(c Conn, o *codec.Outbound) bool {
	if c.Send(o) {
		d.m.out.Inc()
		return true
	}
	return false
}

// sendAll sends one Outbound to every conn and returns how many accepted it.
func (d *Dispatcher) sendAll(conns []Conn, o *codec.Outbound) int {
	n := 0
	if d.mc != nil && len(conns) >= multicastMin {
		n = len(conns) - len(d.mc.SendMany(conns, o, nil))
	} else {
		for _, c := range conns {
			if c.Send(o) {
				n++
			}
		}
	}
	d.m.out.Add(float64(n))
	return n
}

// multicastMin is the fan-out size from which the Multicaster is used; a
// reply or a private message to a user's few devices goes straight to Send.
const multicastMin = 8

// SetMulticaster makes group fan-outs use m. It must be called before the
// first message is handled (the gateway does it when it is created).
func (d *Dispatcher) SetMulticaster(m Multicaster) { d.mc = m }

// marshal encodes v; the values passed are jim's own structs, so a failure
// is a bug, logged rather than sent.
func (d *Dispatcher) marshal(v any) []byte {
	b, err := codec.Marshal(v)
	if err != nil {
		d.log.Error("dispatch: encoding reply", "err", err)
		return codec.StatusResp(codec.CmdUnknown, codec.StatusUnknownCmd)
	}
	return b
}
